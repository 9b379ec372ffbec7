import CSpindle
import Glibc
import Testing
@testable import VhostUser

@Suite struct MessageReaderTests {
    static let addr = VhostUserRequest.setVringAddr(VhostUserVringAddress(
        index: 0, flags: 0, descUserAddr: 0x1000, usedUserAddr: 0x3000, availUserAddr: 0x2000, logGuestAddr: 0))

    @Test func readsOneMessage() throws {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        #expect(reader.readAvailable().messages.isEmpty)
        pair.send(Self.addr.message())
        let result = reader.readAvailable()
        #expect(result.end == nil)
        #expect(result.messages.count == 1)
        let message = try #require(result.messages.first)
        #expect(try VhostUserRequest.decode(message) == Self.addr)
    }

    @Test func messageSplitAcrossManyWritesIsReassembled() throws {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        let bytes = Self.addr.message().encoded
        for (i, byte) in bytes.enumerated() {
            pair.send([byte])
            let result = reader.readAvailable()
            #expect(result.end == nil)
            if i < bytes.count - 1 {
                #expect(result.messages.isEmpty)
                #expect(reader.bufferedByteCount == i + 1)
            } else {
                #expect(result.messages.count == 1)
                #expect(try VhostUserRequest.decode(try #require(result.messages.first)) == Self.addr)
                #expect(reader.bufferedByteCount == 0)
            }
        }
    }

    @Test func severalMessagesInOneWriteComeOutInOrder() throws {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        let requests: [VhostUserRequest] = [
            .getFeatures, .setFeatures(0x4000_0000), Self.addr, .setOwner,
            .setConfig(VhostUserConfigSpace(offset: 4, flags: 0, payload: [1, 2, 3])),
        ]
        pair.send(requests.flatMap { $0.message().encoded })
        let result = reader.readAvailable()
        #expect(result.end == nil)
        #expect(try result.messages.map { try VhostUserRequest.decode($0) } == requests)
    }

    @Test func fdsArriveWithTheirMessage() throws {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        let probe = FDClosureProbe()
        let kickFD = probe.makeFD()
        let regionFDs = [probe.makeFD(), probe.makeFD()]
        probe.releaseOriginal()
        let region = RequestRoundTripTests.region
        let kick = VhostUserRequest.setVringKick(VhostUserVringFile(index: 1, fd: kickFD)).message()
        let table = VhostUserRequest.setMemTable(regionFDs.map { VhostUserMemoryRegionFD(region: region, fd: $0) }).message()
        // A message without fds, then two with: each message must get exactly its own fds.
        pair.send(VhostUserRequest.getFeatures.message())
        pair.send(kick)
        pair.send(table)
        closeAll([kickFD] + regionFDs)  // the reader side now holds the only copies
        #expect(!probe.allClosed)

        let result = reader.readAvailable()
        #expect(result.messages.map(\.fds.count) == [0, 1, 2])
        let decoded = try result.messages.map { try VhostUserRequest.decode($0) }
        guard decoded.count == 3, case .setVringKick(let file) = decoded[1], case .setMemTable(let regions) = decoded[2] else {
            Issue.record("unexpected \(decoded)")
            return
        }
        #expect(file.index == 1)
        #expect(file.fd != nil)
        #expect(regions.count == 2)
        #expect(!probe.allClosed)
        decoded.forEach { $0.closeFileDescriptors() }
        #expect(probe.allClosed)
    }

    @Test func oversizedPayloadIsAProtocolError() {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend, maxPayloadSize: 4096)
        pair.send(le(UInt32(24)) + le(UInt32(1)) + le(UInt32(5000)) + [0, 0, 0, 0])
        let result = reader.readAvailable()
        #expect(result.messages.isEmpty)
        #expect(result.end == .protocolError(VhostUserProtocolError(
            request: 24, "payload of 5000 bytes exceeds the limit of 4096 bytes")))
        #expect(result.end?.description == "GET_CONFIG: payload of 5000 bytes exceeds the limit of 4096 bytes")
        // The end is sticky.
        #expect(reader.readAvailable().end == result.end)
    }

    @Test func payloadAtTheLimitIsAccepted() {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend, maxPayloadSize: 300)
        pair.send(le(UInt32(77)) + le(UInt32(1)) + le(UInt32(300)) + [UInt8](repeating: 1, count: 300))
        let result = reader.readAvailable()
        #expect(result.end == nil)
        #expect(result.messages.first?.payload.count == 300)
    }

    @Test func orderlyCloseBetweenMessages() {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        pair.send(VhostUserRequest.getFeatures.message())
        pair.closeFrontend()
        let result = reader.readAvailable()
        #expect(result.messages.count == 1)
        #expect(result.end == .peerClosed)
    }

    @Test func closeMidMessageIsReportedAndDropsItsFDs() {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        let probe = FDClosureProbe()
        let fd = probe.makeFD()
        probe.releaseOriginal()
        let bytes = VhostUserRequest.setVringCall(VhostUserVringFile(index: 0, fd: fd)).message().encoded
        pair.send(Array(bytes.prefix(15)), fds: [fd])
        close(fd)
        #expect(reader.readAvailable().end == nil)
        #expect(!probe.allClosed)
        pair.closeFrontend()
        let result = reader.readAvailable()
        #expect(result.messages.isEmpty)
        #expect(result.end == .peerClosedMidMessage(bytesReceived: 15))
        #expect(probe.allClosed)
    }

    @Test func closeMidHeader() {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        pair.send([1, 0, 0, 0, 1])
        pair.closeFrontend()
        #expect(reader.readAvailable().end == .peerClosedMidMessage(bytesReceived: 5))
    }

    @Test func deinitClosesFDsOfAnUnfinishedMessage() {
        let pair = SocketPair()
        let probe = FDClosureProbe()
        let fd = probe.makeFD()
        probe.releaseOriginal()
        do {
            let reader = VhostUserMessageReader(socket: pair.backend)
            pair.send(le(UInt32(21)) + le(UInt32(1)) + le(UInt32(8)) + [0, 0], fds: [fd])
            close(fd)
            #expect(reader.readAvailable().messages.isEmpty)
            #expect(!probe.allClosed)
        }
        #expect(probe.allClosed)
    }

    @Test func tooManyFDsIsAProtocolErrorAndClosesThemAll() {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        let probe = FDClosureProbe()
        let fds = (0..<9).map { _ in probe.makeFD() }
        probe.releaseOriginal()
        pair.send(VhostUserRequest.getFeatures.message().encoded, fds: fds)
        closeAll(fds)
        let result = reader.readAvailable()
        #expect(result.messages.isEmpty)
        #expect(result.end == .protocolError(VhostUserProtocolError(
            request: nil, "more than 8 file descriptors came with one message")))
        #expect(probe.allClosed)
    }

    @Test func connectionResetIsASocketError() {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        // Closing a Unix socket with unread data in its receive queue resets the peer.
        _ = write(pair.backend, [UInt8(1)], 1)
        pair.closeFrontend()
        #expect(reader.readAvailable().end == .socketError(errno: ECONNRESET))
    }

    @Test func messageBudgetLimitsOneCall() {
        let pair = SocketPair()
        let reader = VhostUserMessageReader(socket: pair.backend)
        pair.send((0..<5).flatMap { _ in VhostUserRequest.getQueueNum.message().encoded })
        let first = reader.readAvailable(messageBudget: 2)
        #expect(first.messages.count == 2)
        #expect(first.moreMayBeAvailable)
        let rest = reader.readAvailable(messageBudget: 10)
        #expect(rest.messages.count == 3)
        #expect(!rest.moreMayBeAvailable)
    }
}

@Suite struct SendMessageTests {
    @Test func replyRoundTripThroughTheSocket() throws {
        let pair = SocketPair()
        let frontendReader = VhostUserMessageReader(socket: pair.frontend)
        let flags = fcntl(pair.frontend, F_GETFL)
        _ = fcntl(pair.frontend, F_SETFL, flags | O_NONBLOCK)

        let probe = FDClosureProbe()
        let fd = probe.makeFD()
        probe.releaseOriginal()
        let description = VhostUserInflightDescription(mmapSize: 8192, mmapOffset: 0, numQueues: 2, queueSize: 128)
        try VhostUserSocket.sendMessage(fd: pair.backend, message: VhostUserReply.inflight(description, fd: fd))
        close(fd)
        try VhostUserSocket.sendMessage(fd: pair.backend, message: VhostUserReply.u64(.getQueueNum, 2))

        let result = frontendReader.readAvailable()
        #expect(result.messages.count == 2)
        let (decoded, receivedFD) = try VhostUserReplyDecoder.inflight(try #require(result.messages.first))
        #expect(decoded == description)
        #expect(!probe.allClosed)
        close(receivedFD)
        #expect(probe.allClosed)
        #expect(try VhostUserReplyDecoder.u64(try #require(result.messages.last), to: .getQueueNum) == 2)
    }

    @Test func fullSocketTimesOut() {
        let pair = SocketPair()
        let chunk = [UInt8](repeating: 0, count: 65536)
        // Fill the socket buffer (the front-end end never reads).
        while chunk.withUnsafeBytes({ send(pair.backend, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) > 0 {}
        #expect(throws: VhostUserSendError.timedOut) {
            try VhostUserSocket.sendMessage(fd: pair.backend, bytes: VhostUserReply.u64(.getFeatures, 0).encoded,
                                            timeoutMilliseconds: 20)
        }
    }

    @Test func closedPeerIsReported() {
        let pair = SocketPair()
        pair.closeFrontend()
        #expect(throws: VhostUserSendError.peerClosed) {
            try VhostUserSocket.sendMessage(fd: pair.backend, message: VhostUserReply.u64(.getFeatures, 0))
        }
    }

    @Test func tooManyFDsAreRefused() {
        let pair = SocketPair()
        #expect(throws: VhostUserSendError.tooManyFileDescriptors(9)) {
            try VhostUserSocket.sendMessage(fd: pair.backend, bytes: [0], fds: Array(repeating: 0, count: 9))
        }
    }
}
