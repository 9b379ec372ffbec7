/// Front-end side: checking and interpreting the back-end's replies (and, on the back-end
/// channel, the front-end's REPLY_ACKs to the back-end's messages).
///
/// Every function takes ownership of `reply.fds`: any fd it does not return is closed,
/// including on error.
public enum VhostUserReplyDecoder {
    /// A u64 reply (GET_FEATURES, GET_QUEUE_NUM, ...) or a REPLY_ACK status.
    public static func u64(_ reply: VhostUserMessage, to request: VhostUserRequestCode) throws(VhostUserProtocolError) -> UInt64 {
        try withFDsClosed(reply) { () throws(VhostUserProtocolError) in
            try checkHeader(reply, request: request.rawValue, payloadSize: 8, fdCount: 0)
            var reader = VhostUserByteReader(reply.payload)
            guard let value = reader.readUInt64() else { throw shortReply(reply) }
            return value
        }
    }

    /// REPLY_ACK to a message sent with NEED_REPLY: true if the peer reported success
    /// (zero). `request` is the raw code of the message being acknowledged, so this also
    /// serves back-end channel messages.
    public static func ack(_ reply: VhostUserMessage, to request: UInt32) throws(VhostUserProtocolError) -> Bool {
        try withFDsClosed(reply) { () throws(VhostUserProtocolError) in
            try checkHeader(reply, request: request, payloadSize: 8, fdCount: 0)
            var reader = VhostUserByteReader(reply.payload)
            guard let value = reader.readUInt64() else { throw shortReply(reply) }
            return value == 0
        }
    }

    /// GET_VRING_BASE reply.
    public static func vringState(_ reply: VhostUserMessage, to request: VhostUserRequestCode) throws(VhostUserProtocolError) -> VhostUserVringState {
        try withFDsClosed(reply) { () throws(VhostUserProtocolError) in
            try checkHeader(reply, request: request.rawValue, payloadSize: VhostUserVringState.wireSize, fdCount: 0)
            var reader = VhostUserByteReader(reply.payload)
            guard let state = VhostUserVringState(reader: &reader) else { throw shortReply(reply) }
            return state
        }
    }

    /// GET_CONFIG reply: nil if the back-end signalled failure (empty payload).
    public static func config(_ reply: VhostUserMessage) throws(VhostUserProtocolError) -> VhostUserConfigSpace? {
        try withFDsClosed(reply) { () throws(VhostUserProtocolError) in
            if reply.payload.isEmpty {
                try checkHeader(reply, request: VhostUserRequestCode.getConfig.rawValue, payloadSize: 0, fdCount: 0)
                return nil
            }
            try checkHeader(reply, request: VhostUserRequestCode.getConfig.rawValue, payloadSize: nil, fdCount: 0)
            var reader = VhostUserByteReader(reply.payload)
            guard let offset = reader.readUInt32(), let size = reader.readUInt32(),
                  let flags = reader.readUInt32() else { throw shortReply(reply) }
            guard size <= VhostUserConfigSpace.maxSize,
                  reply.payload.count == VhostUserConfigSpace.headerSize + Int(size),
                  let bytes = reader.readBytes(Int(size)) else {
                throw VhostUserProtocolError(.getConfig, "reply payload is \(reply.payload.count) bytes but says \(size) bytes of config")
            }
            return VhostUserConfigSpace(offset: offset, flags: flags, payload: bytes)
        }
    }

    /// GET_INFLIGHT_FD reply: the description and the shared buffer's fd (now the caller's).
    public static func inflight(_ reply: VhostUserMessage) throws(VhostUserProtocolError) -> (VhostUserInflightDescription, fd: Int32) {
        do throws(VhostUserProtocolError) {
            try checkHeader(reply, request: VhostUserRequestCode.getInflightFD.rawValue,
                            payloadSize: VhostUserInflightDescription.wireSize, fdCount: 1)
            var reader = VhostUserByteReader(reply.payload)
            guard let description = VhostUserInflightDescription(reader: &reader),
                  let fd = reply.fds.first else { throw shortReply(reply) }
            return (description, fd)
        } catch {
            closeAll(reply.fds)
            throw error
        }
    }

    // MARK: - Helpers

    /// Runs `body` for a reply that carries no fds to keep, closing any that came.
    private static func withFDsClosed<T>(_ reply: VhostUserMessage,
                                         _ body: () throws(VhostUserProtocolError) -> T) throws(VhostUserProtocolError) -> T {
        defer { closeAll(reply.fds) }
        return try body()
    }

    /// Version 1, REPLY set, same request code, expected payload size (nil: any) and fds.
    private static func checkHeader(_ reply: VhostUserMessage, request: UInt32, payloadSize: Int?,
                                    fdCount: Int) throws(VhostUserProtocolError) {
        let header = reply.header
        guard header.flags.version == VhostUserHeaderFlags.currentVersion else {
            throw VhostUserProtocolError(request: request, "reply has protocol version \(header.flags.version), expected 1")
        }
        guard header.flags.contains(.reply) else {
            throw VhostUserProtocolError(request: request, "reply lacks the REPLY flag")
        }
        guard header.request == request else {
            throw VhostUserProtocolError(
                request: request, "reply is for \(VhostUserRequestCode.name(ofRawCode: header.request)) instead")
        }
        guard Int(header.size) == reply.payload.count else {
            throw VhostUserProtocolError(
                request: request, "reply header says \(header.size) payload bytes but \(reply.payload.count) arrived")
        }
        if let payloadSize, reply.payload.count != payloadSize {
            throw VhostUserProtocolError(
                request: request, "reply payload is \(reply.payload.count) bytes, expected \(payloadSize)")
        }
        guard reply.fds.count == fdCount else {
            throw VhostUserProtocolError(
                request: request, "reply came with \(reply.fds.count) file descriptors, expected \(fdCount)")
        }
    }

    private static func shortReply(_ reply: VhostUserMessage) -> VhostUserProtocolError {
        VhostUserProtocolError(request: reply.header.request, "reply payload of \(reply.payload.count) bytes ended early")
    }
}
