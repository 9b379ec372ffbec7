import Foundation
import Testing
import CSpindle
import VhostUser
@testable import VhostUserFrontend

/// A frontend sending malformed or hostile vhost-user messages, over the daemon's real
/// socket: each is refused (REPLY_ACK failure) or ends that connection, with a log line; the
/// daemon stays up and the other export keeps serving correct data meanwhile.
@Suite(.serialized, .enabled(if: TwoExportDaemon.executable != nil, "spindle is not built"))
struct HostileMessageTests {
    enum Expected: Sendable { case refused, closed }

    enum BadMessage: String, CaseIterable, CustomStringConvertible, Sendable {
        case wrongPayloadSize, oversizedPayload, memTableOverlappingRegions, memTableOverflowingRegion,
             memTableFewerFDsThanRegions, vringNumNotPowerOfTwo, vringNumTooLarge, kickWithTwoFDs,
             moreFDsThanAnyMessage, vringAddressesOutsideMemory, addedRegionOverlapping, removedRegionUnknown

        var description: String { rawValue }

        var expected: Expected {
            switch self {
            case .memTableOverlappingRegions, .memTableOverflowingRegion, .vringNumNotPowerOfTwo, .vringNumTooLarge,
                 .addedRegionOverlapping, .removedRegionUnknown:
                return .refused
            default:
                return .closed
            }
        }

        /// What the daemon's log says about it.
        var logged: String {
            switch self {
            case .wrongPayloadSize, .memTableFewerFDsThanRegions, .kickWithTwoFDs: return "malformed vhost-user message"
            case .oversizedPayload: return "exceeds the limit"
            case .moreFDsThanAnyMessage: return "file descriptors came with one message"
            case .memTableOverlappingRegions: return "overlap"
            case .memTableOverflowingRegion: return "cannot map the guest memory table"
            case .vringNumNotPowerOfTwo, .vringNumTooLarge: return "is not a power of two between 1 and 32768"
            case .vringAddressesOutsideMemory: return "cannot start the ring"
            case .addedRegionOverlapping: return "cannot add guest memory region"
            case .removedRegionUnknown: return "no mapped guest memory region matches"
            }
        }
    }

    @Test(arguments: BadMessage.allCases)
    func badMessageAffectsOnlyItsConnection(_ bad: BadMessage) throws {
        let daemon = try TwoExportDaemon.start()
        defer { daemon.stop() }
        let bystander = try Bystander.running(on: daemon)
        defer { bystander.stop() }

        let client = try RawVhostUserClient(path: daemon.victimSocket)
        defer { client.close() }
        try client.negotiateReplyAck()
        let errorFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        defer { Glibc.close(errorFD) }
        let memory = try SharedMemoryRegion(size: 2 << 20, name: "hostile-test")
        var extra: [Int32] = []
        defer { for fd in extra { Glibc.close(fd) } }
        func eventFD() -> Int32 { let fd = eventfd(0, Int32(EFD_CLOEXEC)); extra.append(fd); return fd }
        func region(_ gpa: UInt64, _ size: UInt64, _ uva: UInt64) -> [UInt8] {
            le(gpa) + le(size) + le(uva) + le(UInt64(0))
        }

        switch bad {
        case .wrongPayloadSize:
            client.send(.setFeatures, payload: [1, 0, 0, 0])
        case .oversizedPayload:
            client.sendRaw(header(.setFeatures, size: 1 << 24) + [UInt8](repeating: 0, count: 64))
        case .memTableOverlappingRegions:
            client.send(.setMemTable, payload: le(UInt32(2)) + le(UInt32(0)) + region(0, 2 << 20, 0x10_0000_0000)
                            + region(1 << 20, 2 << 20, 0x20_0000_0000), fds: [memory.fd, memory.fd])
        case .memTableOverflowingRegion:
            client.send(.setMemTable, payload: le(UInt32(1)) + le(UInt32(0)) + region(0xFFFF_FFFF_FFF0_0000, 2 << 20, 0x10_0000_0000),
                        fds: [memory.fd])
        case .memTableFewerFDsThanRegions:
            client.send(.setMemTable, payload: le(UInt32(2)) + le(UInt32(0)) + region(0, 1 << 20, 0x10_0000_0000)
                            + region(1 << 20, 1 << 20, 0x10_0010_0000), fds: [memory.fd])
        case .vringNumNotPowerOfTwo:
            client.send(.setVringNum, payload: le(UInt32(0)) + le(UInt32(100)))
        case .vringNumTooLarge:
            client.send(.setVringNum, payload: le(UInt32(0)) + le(UInt32(65536)))
        case .kickWithTwoFDs:
            client.send(.setVringKick, payload: le(UInt64(0)), fds: [eventFD(), eventFD()])
        case .moreFDsThanAnyMessage:
            client.send(.setVringKick, payload: le(UInt64(0)), fds: (0..<9).map { _ in eventFD() })
        case .addedRegionOverlapping, .removedRegionUnknown:
            let described = memory.regionDescription
            client.send(.setMemTable, payload: le(UInt32(1)) + le(UInt32(0)) + region(described.guestPhysAddr, described.memorySize, described.userAddr),
                        fds: [memory.fd])
            #expect(client.ack() == 0)
            if bad == .addedRegionOverlapping {
                // Half-way into the mapped region, in guest physical space.
                client.send(.addMemReg, payload: le(UInt64(0)) + region(described.guestPhysAddr + (1 << 20), 2 << 20, 0x30_0000_0000),
                            fds: [memory.fd])
            } else {
                client.send(.remMemReg, payload: le(UInt64(0)) + region(0x40_0000_0000, 1 << 20, 0x40_0000_0000))
            }
        case .vringAddressesOutsideMemory:
            // A valid memory table, then rings at addresses it does not map.
            let described = memory.regionDescription
            client.send(.setMemTable, payload: le(UInt32(1)) + le(UInt32(0)) + region(described.guestPhysAddr, described.memorySize, described.userAddr),
                        fds: [memory.fd])
            #expect(client.ack() == 0)
            let outside: UInt64 = 0xDEAD_0000_0000
            for (request, payload) in [(VhostUserRequestCode.setVringNum, le(UInt32(0)) + le(UInt32(64))),
                                       (.setVringBase, le(UInt32(0)) + le(UInt32(0))),
                                       (.setVringAddr, le(UInt32(0)) + le(UInt32(0)) + le(outside) + le(outside + 0x2000) + le(outside + 0x1000) + le(UInt64(0)))] {
                client.send(request, payload: payload)
                #expect(client.ack() == 0)
            }
            client.send(.setVringErr, payload: le(UInt64(0)), fds: [errorFD])
            #expect(client.ack() == 0)
            client.send(.setVringKick, payload: le(UInt64(0)), fds: [eventFD()])
            #expect(client.ack() == 0)
            client.send(.setVringEnable, payload: le(UInt32(0)) + le(UInt32(1)))
            _ = client.ack()
            #expect(becomesReadable(errorFD, milliseconds: 10_000), "the vring error eventfd was not signalled")
        }

        switch bad.expected {
        case .refused:
            let status = client.ack()
            #expect(status != nil && status != 0, "expected a REPLY_ACK failure, got \(String(describing: status))")
            // The connection stays usable: a harmless request still gets its reply.
            client.send(.getQueueNum, payload: [], needReply: false)
            #expect(client.receive() != nil)
        case .closed:
            #expect(client.waitForClose(), "the daemon kept the connection open")
        }
        #expect(daemon.waitForLog(bad.logged), "log lacks '\(bad.logged)': \(daemon.log)")

        let rounds = bystander.rounds
        #expect(bystander.waitForRounds(rounds + 3))
        #expect(bystander.failures.isEmpty, "bystander: \(bystander.failures)")
        #expect(daemon.isRunning)
    }

    /// Export and monitor sockets are owner-only even when the daemon's umask would allow more.
    @Test func socketsAreOwnerOnly() throws {
        let daemon = try TwoExportDaemon.start()
        defer { daemon.stop() }
        for path in [daemon.victimSocket, daemon.bystanderSocket, daemon.monitorSocket] {
            var info = stat()
            #expect(lstat(path, &info) == 0)
            #expect(info.st_mode & S_IFMT == S_IFSOCK)
            #expect(info.st_mode & 0o777 == 0o600, "\(path) has mode \(String(info.st_mode & 0o777, radix: 8))")
        }
    }
}

func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

func header(_ request: VhostUserRequestCode, flags: UInt32 = 1, size: UInt32) -> [UInt8] {
    le(request.rawValue) + le(flags) + le(size)
}

/// A vhost-user client that writes whatever bytes and fds it is told, to play a hostile frontend.
struct RawVhostUserClient {
    let fd: Int32

    init(path: String) throws {
        let fd = spindle_unix_connect(path)
        guard fd >= 0 else { throw FrontendError("cannot connect to \(path)") }
        self.fd = fd
    }

    func close() { Glibc.close(fd) }

    func sendRaw(_ bytes: [UInt8], fds: [Int32] = []) {
        let sent = bytes.withUnsafeBytes { raw in
            fds.withUnsafeBufferPointer { spindle_send_with_fds(fd, raw.baseAddress, raw.count, $0.baseAddress, Int32(fds.count)) }
        }
        precondition(sent == bytes.count, "short send to the daemon: \(sent)")
    }

    /// Sends with NEED_REPLY (REPLY_ACK is negotiated first) unless told otherwise.
    func send(_ request: VhostUserRequestCode, payload: [UInt8], fds: [Int32] = [], needReply: Bool = true) {
        sendRaw(header(request, flags: needReply ? 0x9 : 0x1, size: UInt32(payload.count)) + payload, fds: fds)
    }

    /// One reply's payload, or nil if the connection closed or nothing came within 10 s.
    func receive() -> [UInt8]? {
        guard let head = read(VhostUserHeader.size), let parsed = VhostUserHeader(bytes: head) else { return nil }
        return read(Int(parsed.size))
    }

    /// The u64 of a REPLY_ACK (0 = success), or nil if none came.
    func ack() -> UInt64? {
        guard let payload = receive(), payload.count == 8 else { return nil }
        return payload.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    private func read(_ count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            guard becomesReadable(fd, milliseconds: 10_000) else { return nil }
            let n = bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + filled, count - filled, 0) }
            guard n > 0 else { return nil }
            filled += n
        }
        return bytes
    }

    /// Whether the daemon closes the connection within 10 s (replies before that are skipped).
    func waitForClose() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 256)
        while becomesReadable(fd, milliseconds: 10_000) {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 || (n < 0 && errno == ECONNRESET) { return true }
            if n < 0 { return false }
        }
        return false
    }

    /// GET_FEATURES / SET_FEATURES / GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES(REPLY_ACK).
    func negotiateReplyAck() throws {
        send(.getFeatures, payload: [], needReply: false)
        guard var features = receive(), features.count == 8 else { throw FrontendError("no GET_FEATURES reply") }
        // A split-ring frontend (QEMU without packed=on): VIRTIO_F_RING_PACKED (bit 34) not acked.
        features[4] &= ~0x04
        send(.setFeatures, payload: features, needReply: false)
        send(.getProtocolFeatures, payload: [], needReply: false)
        guard receive() != nil else { throw FrontendError("no GET_PROTOCOL_FEATURES reply") }
        send(.setProtocolFeatures, payload: le(VhostUserProtocolFeatures.replyAck.rawValue), needReply: false)
    }
}
