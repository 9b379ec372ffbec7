/// Replies the back-end sends to front-end requests. Each has the REPLY flag and version 1
/// and repeats the request code. Send with `VhostUserSocket.sendMessage(fd:message:)`.
public enum VhostUserReply {
    /// A u64 reply: GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS,
    /// GET_STATUS, and so on.
    public static func u64(_ request: VhostUserRequestCode, _ value: UInt64) -> VhostUserMessage {
        var writer = VhostUserByteWriter(capacity: 8)
        writer.append(value)
        return reply(request, writer.bytes)
    }

    /// The REPLY_ACK reply to a request that had NEED_REPLY set and has no reply of its own:
    /// 0 for success, nonzero for failure.
    public static func ack(_ request: VhostUserRequestCode, success: Bool) -> VhostUserMessage {
        u64(request, success ? 0 : 1)
    }

    /// REPLY_ACK for a request whose code the spec does not define (always a failure).
    public static func ackFailure(rawRequest: UInt32) -> VhostUserMessage {
        var writer = VhostUserByteWriter(capacity: 8)
        writer.append(UInt64(1))
        return VhostUserMessage(request: rawRequest, flags: replyFlags, payload: writer.bytes)
    }

    /// Front-end side: REPLY_ACK to a back-end channel message that had NEED_REPLY set.
    public static func ack(toBackendRequest request: VhostUserBackendRequestCode, success: Bool) -> VhostUserMessage {
        var writer = VhostUserByteWriter(capacity: 8)
        writer.append(UInt64(success ? 0 : 1))
        return VhostUserMessage(request: request.rawValue, flags: replyFlags, payload: writer.bytes)
    }

    /// A vring state reply (GET_VRING_BASE: the ring index and its next avail index).
    public static func vringState(_ request: VhostUserRequestCode, _ state: VhostUserVringState) -> VhostUserMessage {
        var writer = VhostUserByteWriter(capacity: VhostUserVringState.wireSize)
        state.encode(into: &writer)
        return reply(request, writer.bytes)
    }

    /// GET_CONFIG reply: the requested window of config space. Its size must equal the
    /// size that was asked for.
    public static func config(_ config: VhostUserConfigSpace) -> VhostUserMessage {
        var writer = VhostUserByteWriter(capacity: config.wireSize)
        config.encode(into: &writer)
        return reply(.getConfig, writer.bytes)
    }

    /// GET_CONFIG failure: the spec signals it with an empty payload.
    public static func configFailure() -> VhostUserMessage {
        reply(.getConfig, [])
    }

    /// GET_INFLIGHT_FD reply: the description and the fd of the shared buffer. The fd stays
    /// owned by the caller (sending duplicates it into the peer).
    public static func inflight(_ description: VhostUserInflightDescription, fd: Int32) -> VhostUserMessage {
        var writer = VhostUserByteWriter(capacity: VhostUserInflightDescription.wireSize)
        description.encode(into: &writer)
        return VhostUserMessage(request: VhostUserRequestCode.getInflightFD.rawValue, flags: replyFlags,
                                payload: writer.bytes, fds: [fd])
    }

    static let replyFlags: VhostUserHeaderFlags = [.version1, .reply]

    private static func reply(_ request: VhostUserRequestCode, _ payload: [UInt8]) -> VhostUserMessage {
        VhostUserMessage(request: request.rawValue, flags: replyFlags, payload: payload)
    }
}
