/// Front-end side: checking and interpreting the back-end's replies (and, on the back-end
/// channel, the front-end's REPLY_ACKs to the back-end's messages).
///
/// Every function takes ownership of `reply.fds`: any fd it does not return is closed,
/// including on error.
public enum VhostUserReplyDecoder {
    /// A u64 reply (GET_FEATURES, GET_QUEUE_NUM, ...) or a REPLY_ACK status.
    public static func u64(_ reply: VhostUserMessage, to request: VhostUserRequestCode) throws(VhostUserProtocolError) -> UInt64 {
        try u64(reply, Expected(request))
    }

    /// REPLY_ACK to a front-end request sent with NEED_REPLY: true if the back-end reported
    /// success (zero).
    public static func ack(_ reply: VhostUserMessage, to request: VhostUserRequestCode) throws(VhostUserProtocolError) -> Bool {
        try u64(reply, Expected(request)) == 0
    }

    /// REPLY_ACK to a request whose code the spec does not define.
    public static func ack(_ reply: VhostUserMessage, toRawRequest request: UInt32) throws(VhostUserProtocolError) -> Bool {
        try u64(reply, Expected(code: request, backendChannel: false)) == 0
    }

    /// REPLY_ACK from the front-end to a back-end channel message sent with NEED_REPLY
    /// (e.g. BACKEND_CONFIG_CHANGE_MSG): true if the front-end reported success.
    public static func ack(_ reply: VhostUserMessage, toBackendRequest request: VhostUserBackendRequestCode) throws(VhostUserProtocolError) -> Bool {
        try u64(reply, Expected(code: request.rawValue, backendChannel: true)) == 0
    }

    private static func u64(_ reply: VhostUserMessage, _ expected: Expected) throws(VhostUserProtocolError) -> UInt64 {
        try withFDsClosed(reply) { () throws(VhostUserProtocolError) in
            try checkHeader(reply, expected, payloadSize: 8, fdCount: 0)
            var reader = VhostUserByteReader(reply.payload)
            guard let value = reader.readUInt64() else { throw expected.error("reply payload ended early") }
            return value
        }
    }

    /// GET_VRING_BASE reply.
    public static func vringState(_ reply: VhostUserMessage, to request: VhostUserRequestCode) throws(VhostUserProtocolError) -> VhostUserVringState {
        try withFDsClosed(reply) { () throws(VhostUserProtocolError) in
            try checkHeader(reply, Expected(request), payloadSize: VhostUserVringState.wireSize, fdCount: 0)
            var reader = VhostUserByteReader(reply.payload)
            guard let state = VhostUserVringState(reader: &reader) else { throw Expected(request).error("reply payload ended early") }
            return state
        }
    }

    /// GET_CONFIG reply: nil if the back-end signalled failure (empty payload).
    public static func config(_ reply: VhostUserMessage) throws(VhostUserProtocolError) -> VhostUserConfigSpace? {
        try withFDsClosed(reply) { () throws(VhostUserProtocolError) in
            if reply.payload.isEmpty {
                try checkHeader(reply, Expected(.getConfig), payloadSize: 0, fdCount: 0)
                return nil
            }
            try checkHeader(reply, Expected(.getConfig), payloadSize: nil, fdCount: 0)
            var reader = VhostUserByteReader(reply.payload)
            guard let offset = reader.readUInt32(), let size = reader.readUInt32(),
                  let flags = reader.readUInt32() else { throw Expected(.getConfig).error("reply payload ended early") }
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
            try checkHeader(reply, Expected(.getInflightFD),
                            payloadSize: VhostUserInflightDescription.wireSize, fdCount: 1)
            var reader = VhostUserByteReader(reply.payload)
            guard let description = VhostUserInflightDescription(reader: &reader),
                  let fd = reply.fds.first else { throw Expected(.getInflightFD).error("reply payload ended early") }
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

    /// The request a reply should answer, and which channel's names it uses.
    private struct Expected {
        let code: UInt32
        let backendChannel: Bool

        init(code: UInt32, backendChannel: Bool) {
            self.code = code
            self.backendChannel = backendChannel
        }

        init(_ code: VhostUserRequestCode) {
            self.init(code: code.rawValue, backendChannel: false)
        }

        func name(of raw: UInt32) -> String {
            backendChannel ? VhostUserBackendRequestCode.name(ofRawCode: raw) : VhostUserRequestCode.name(ofRawCode: raw)
        }

        func error(_ problem: String) -> VhostUserProtocolError {
            backendChannel ? VhostUserProtocolError(backendRequest: code, problem) : VhostUserProtocolError(request: code, problem)
        }
    }

    /// Version 1, REPLY set, same request code, expected payload size (nil: any) and fds.
    private static func checkHeader(_ reply: VhostUserMessage, _ expected: Expected, payloadSize: Int?,
                                    fdCount: Int) throws(VhostUserProtocolError) {
        let header = reply.header
        guard header.flags.version == VhostUserHeaderFlags.currentVersion else {
            throw expected.error("reply has protocol version \(header.flags.version), expected 1")
        }
        guard header.flags.contains(.reply) else {
            throw expected.error("reply lacks the REPLY flag")
        }
        guard header.request == expected.code else {
            throw expected.error("reply is for \(expected.name(of: header.request)) instead")
        }
        guard Int(header.size) == reply.payload.count else {
            throw expected.error("reply header says \(header.size) payload bytes but \(reply.payload.count) arrived")
        }
        if let payloadSize, reply.payload.count != payloadSize {
            throw expected.error("reply payload is \(reply.payload.count) bytes, expected \(payloadSize)")
        }
        guard reply.fds.count == fdCount else {
            throw expected.error("reply came with \(reply.fds.count) file descriptors, expected \(fdCount)")
        }
    }
}
