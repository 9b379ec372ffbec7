import Glibc
import Testing
@testable import VhostUser

@Suite struct ReplyCodecTests {
    @Test func u64ReplyBytes() throws {
        let reply = VhostUserReply.u64(.getFeatures, 0x1_4000_0000)
        #expect(reply.encoded == le(UInt32(1)) + le(UInt32(5)) + le(UInt32(8)) + le(UInt64(0x1_4000_0000)))
        #expect(try VhostUserReplyDecoder.u64(reply, to: .getFeatures) == 0x1_4000_0000)
    }

    @Test func ackReplies() throws {
        let ok = VhostUserReply.ack(.setMemTable, success: true)
        let failed = VhostUserReply.ack(.setMemTable, success: false)
        #expect(ok.encoded == le(UInt32(5)) + le(UInt32(5)) + le(UInt32(8)) + le(UInt64(0)))
        #expect(try VhostUserReplyDecoder.ack(ok, to: .setMemTable) == true)
        #expect(try VhostUserReplyDecoder.ack(failed, to: .setMemTable) == false)
        let unknown = VhostUserReply.ackFailure(rawRequest: 99)
        #expect(unknown.header.request == 99)
        #expect(try VhostUserReplyDecoder.ack(unknown, toRawRequest: 99) == false)
    }

    @Test func vringStateReply() throws {
        let state = VhostUserVringState(index: 1, num: 4711)
        let reply = VhostUserReply.vringState(.getVringBase, state)
        #expect(reply.payload == le(UInt32(1)) + le(UInt32(4711)))
        #expect(try VhostUserReplyDecoder.vringState(reply, to: .getVringBase) == state)
    }

    @Test func configReplies() throws {
        let config = VhostUserConfigSpace(offset: 0, flags: 0, payload: Array(0..<60))
        let reply = VhostUserReply.config(config)
        #expect(reply.header.size == 72)
        #expect(try VhostUserReplyDecoder.config(reply) == config)
        let failure = VhostUserReply.configFailure()
        #expect(failure.header.size == 0)
        #expect(try VhostUserReplyDecoder.config(failure) == nil)
    }

    @Test func inflightReplyCarriesTheFD() throws {
        let description = VhostUserInflightDescription(mmapSize: 4096, mmapOffset: 0, numQueues: 1, queueSize: 256)
        let reply = VhostUserReply.inflight(description, fd: 42)
        #expect(reply.fds == [42])
        #expect(reply.payload.count == 24)
        let (decoded, fd) = try VhostUserReplyDecoder.inflight(reply)
        #expect(decoded == description)
        #expect(fd == 42)
    }

    @Test func malformedRepliesAreRejectedAndTheirFDsClosed() {
        let probe = FDClosureProbe()
        var noReplyFlag = VhostUserReply.u64(.getFeatures, 1)
        noReplyFlag.header.flags = .version1
        noReplyFlag.fds = [probe.makeFD()]
        var inflightWithoutFD = VhostUserReply.inflight(
            VhostUserInflightDescription(mmapSize: 1, mmapOffset: 0, numQueues: 1, queueSize: 1), fd: probe.makeFD())
        inflightWithoutFD.payload.removeLast(4)
        inflightWithoutFD.header.size = 20
        probe.releaseOriginal()

        #expect(throws: VhostUserProtocolError(.getFeatures, "reply lacks the REPLY flag")) {
            try VhostUserReplyDecoder.u64(noReplyFlag, to: .getFeatures)
        }
        #expect(throws: VhostUserProtocolError(.getFeatures, "reply is for GET_QUEUE_NUM instead")) {
            try VhostUserReplyDecoder.u64(VhostUserReply.u64(.getQueueNum, 1), to: .getFeatures)
        }
        #expect(throws: VhostUserProtocolError(.getInflightFD, "reply payload is 20 bytes, expected 24")) {
            try VhostUserReplyDecoder.inflight(inflightWithoutFD)
        }
        #expect(probe.allClosed)
    }

    @Test func configChangeMessage() {
        let plain = VhostUserBackendMessage.configChange(needReply: false)
        #expect(plain.encoded == le(UInt32(2)) + le(UInt32(1)) + le(UInt32(0)))
        let acked = VhostUserBackendMessage.configChange(needReply: true)
        #expect(acked.encoded == le(UInt32(2)) + le(UInt32(9)) + le(UInt32(0)))
        let call = VhostUserBackendMessage.vringCall(index: 3, needReply: false)
        #expect(call.encoded == le(UInt32(4)) + le(UInt32(1)) + le(UInt32(8)) + le(UInt32(3)) + le(UInt32(0)))
    }
}

@Suite struct BackendChannelTests {
    @Test func backendMessagesDecodeOnTheFrontEndSide() throws {
        #expect(try VhostUserBackendRequest.decode(VhostUserBackendMessage.configChange(needReply: true)) == .configChange)
        #expect(try VhostUserBackendRequest.decode(VhostUserBackendMessage.vringCall(index: 2, needReply: false))
                == .vringCall(VhostUserVringState(index: 2, num: 0)))
        #expect(try VhostUserBackendRequest.decode(VhostUserBackendMessage.vringErr(index: 1, needReply: false))
                == .vringErr(VhostUserVringState(index: 1, num: 0)))
        #expect(try VhostUserBackendRequest.decode(rawMessage(1, payload: [1, 2, 3])) == .unsupported(.iotlbMsg))
        #expect(try VhostUserBackendRequest.decode(rawMessage(40)) == .unknown(40))
    }

    @Test func malformedBackendMessagesNameTheBackendRequest() {
        let probe = FDClosureProbe()
        let withFD = rawMessage(2, fds: [probe.makeFD()])
        probe.releaseOriginal()
        #expect(throws: VhostUserProtocolError(backendRequest: 2, "1 file descriptor(s) arrived, expected none")) {
            try VhostUserBackendRequest.decode(withFD)
        }
        #expect(probe.allClosed)
        #expect(throws: VhostUserProtocolError(backendRequest: 2, "payload is 8 bytes, expected none")) {
            try VhostUserBackendRequest.decode(rawMessage(2, payload: le(UInt64(0))))
        }
        let error = VhostUserProtocolError(backendRequest: 4, "payload is 2 bytes, expected 8")
        #expect(error.description == "BACKEND_VRING_CALL: payload is 2 bytes, expected 8")
        #expect(throws: error) { try VhostUserBackendRequest.decode(rawMessage(4, payload: [0, 0])) }
    }

    @Test func frontEndAcksTheBackendMessage() throws {
        let ack = VhostUserReply.ack(toBackendRequest: .configChangeMsg, success: true)
        #expect(ack.encoded == le(UInt32(2)) + le(UInt32(5)) + le(UInt32(8)) + le(UInt64(0)))
        #expect(try VhostUserReplyDecoder.ack(ack, toBackendRequest: .configChangeMsg))
        #expect(throws: VhostUserProtocolError(backendRequest: 2, "reply is for BACKEND_VRING_CALL instead")) {
            try VhostUserReplyDecoder.ack(VhostUserReply.ack(toBackendRequest: .vringCall, success: true),
                                          toBackendRequest: .configChangeMsg)
        }
    }
}
