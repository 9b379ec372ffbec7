/// The fuzz targets, by the names used for executables (Fuzz/), corpora (Fuzz/corpus/<name>)
/// and regression inputs (Tests/Regressions/<name>). Each entry point must accept any bytes
/// without crashing, leaking fds or breaking its invariants (checked with `precondition`).
public enum FuzzTarget: String, CaseIterable, Sendable {
    case vhostUserMessage = "vhost-user-message"
    case guestMemory = "guest-memory"
    case descriptorChain = "descriptor-chain"
    case packedDescriptorChain = "packed-descriptor-chain"
    case virtioBlkRequest = "virtio-blk-request"
    case qmp = "qmp"
    case commandLine = "command-line"
    case qcow2Header = "qcow2-header"
    case qcow2L2Entry = "qcow2-l2-entry"

    public func run(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .vhostUserMessage: fuzzVhostUserMessage(input)
        case .guestMemory: fuzzGuestMemory(input)
        case .descriptorChain: fuzzDescriptorChain(input)
        case .packedDescriptorChain: fuzzPackedDescriptorChain(input)
        case .virtioBlkRequest: fuzzVirtioBlkRequest(input)
        case .qmp: fuzzQMP(input)
        case .commandLine: fuzzCommandLine(input)
        case .qcow2Header: fuzzQcow2Header(input)
        case .qcow2L2Entry: fuzzQcow2L2Entry(input)
        }
    }

    public func run(_ input: [UInt8]) {
        input.withUnsafeBytes { run($0) }
    }
}
