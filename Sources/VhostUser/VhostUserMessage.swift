#if canImport(Glibc)
import Glibc
#endif

/// One framed vhost-user message as it came off (or goes onto) the socket: header, payload
/// bytes and the file descriptors that arrived with it, not yet interpreted.
///
/// Ownership: whoever holds a message owns its `fds` and must either hand them on
/// (`VhostUserRequest.decode` takes them) or close them (`closeFileDescriptors()`).
public struct VhostUserMessage: Sendable {
    public var header: VhostUserHeader
    public var payload: [UInt8]
    public var fds: [Int32]

    /// A message as received; `header.size` should equal `payload.count`.
    public init(header: VhostUserHeader, payload: [UInt8], fds: [Int32] = []) {
        self.header = header
        self.payload = payload
        self.fds = fds
    }

    /// A message to send: the header's size field is set from the payload.
    public init(request: UInt32, flags: VhostUserHeaderFlags, payload: [UInt8] = [], fds: [Int32] = []) {
        self.header = VhostUserHeader(request: request, flags: flags,
                                      size: UInt32(truncatingIfNeeded: payload.count))
        self.payload = payload
        self.fds = fds
    }

    /// The request code if the spec defines it.
    public var requestCode: VhostUserRequestCode? { VhostUserRequestCode(rawValue: header.request) }

    /// Header and payload bytes, ready for `VhostUserSocket.sendMessage` (fds go separately).
    public var encoded: [UInt8] {
        var writer = VhostUserByteWriter(capacity: VhostUserHeader.size + payload.count)
        header.encode(into: &writer)
        writer.append(contentsOf: payload)
        return writer.bytes
    }

    /// Closes every fd the message carries and forgets them.
    public mutating func closeFileDescriptors() {
        closeAll(fds)
        fds = []
    }
}

/// Closes each descriptor, ignoring errors: used on paths where the descriptors are being
/// discarded and there is nobody to report a failed close to.
func closeAll(_ fds: [Int32]) {
    for fd in fds where fd >= 0 {
        _ = close(fd)
    }
}
