/// Messages the back-end sends on its own initiative over the back-end channel (the socket
/// from SET_BACKEND_REQ_FD, needs BACKEND_REQ negotiated).
public enum VhostUserBackendMessage {
    /// BACKEND_CONFIG_CHANGE_MSG: the device's config space changed (e.g. the disk was
    /// resized); the front-end re-reads it with GET_CONFIG. No payload. With `needReply`
    /// (only if REPLY_ACK was negotiated) the front-end answers with a u64 ack, see
    /// `VhostUserReplyDecoder.ack`.
    public static func configChange(needReply: Bool) -> VhostUserMessage {
        message(.configChangeMsg, payload: [], needReply: needReply)
    }

    /// BACKEND_VRING_CALL: in-band "used buffers" notification (INBAND_NOTIFICATIONS).
    public static func vringCall(index: UInt32, needReply: Bool) -> VhostUserMessage {
        vringState(.vringCall, index: index, needReply: needReply)
    }

    /// BACKEND_VRING_ERR: in-band error notification (INBAND_NOTIFICATIONS).
    public static func vringErr(index: UInt32, needReply: Bool) -> VhostUserMessage {
        vringState(.vringErr, index: index, needReply: needReply)
    }

    private static func vringState(_ code: VhostUserBackendRequestCode, index: UInt32, needReply: Bool) -> VhostUserMessage {
        var writer = VhostUserByteWriter(capacity: VhostUserVringState.wireSize)
        VhostUserVringState(index: index, num: 0).encode(into: &writer)
        return message(code, payload: writer.bytes, needReply: needReply)
    }

    private static func message(_ code: VhostUserBackendRequestCode, payload: [UInt8], needReply: Bool) -> VhostUserMessage {
        let flags: VhostUserHeaderFlags = needReply ? [.version1, .needReply] : .version1
        return VhostUserMessage(request: code.rawValue, flags: flags, payload: payload)
    }
}
