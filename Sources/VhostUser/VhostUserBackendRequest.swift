/// Front-end side: a message received on the back-end channel, decoded and validated.
/// For Spindle's Swift front-end (tests, benchmark client).
public enum VhostUserBackendRequest: Sendable, Hashable {
    case configChange
    case vringCall(VhostUserVringState)
    case vringErr(VhostUserVringState)
    /// Defined by the spec but not implemented here (IOTLB, host notifiers, shared
    /// objects). Payload unchecked; any fds were closed.
    case unsupported(VhostUserBackendRequestCode)
    /// Not defined by the spec. Any fds were closed.
    case unknown(UInt32)

    /// Takes ownership of `message.fds`; none of the implemented messages carries any, so
    /// all are closed, on success and on error.
    public static func decode(_ message: VhostUserMessage) throws(VhostUserProtocolError) -> VhostUserBackendRequest {
        defer { closeAll(message.fds) }
        let header = message.header
        let raw = header.request
        func error(_ problem: String) -> VhostUserProtocolError {
            VhostUserProtocolError(backendRequest: raw, problem)
        }
        guard header.flags.version == VhostUserHeaderFlags.currentVersion else {
            throw error("unsupported protocol version \(header.flags.version), expected 1")
        }
        guard Int(header.size) == message.payload.count else {
            throw error("header says \(header.size) payload bytes but \(message.payload.count) arrived")
        }
        guard let code = VhostUserBackendRequestCode(rawValue: raw) else { return .unknown(raw) }
        switch code {
        case .configChangeMsg, .vringCall, .vringErr:
            break
        case .iotlbMsg, .vringHostNotifierMsg, .sharedObjectAdd, .sharedObjectRemove, .sharedObjectLookup:
            return .unsupported(code)
        }
        guard message.fds.isEmpty else {
            throw error("\(message.fds.count) file descriptor(s) arrived, expected none")
        }
        if code == .configChangeMsg {
            guard message.payload.isEmpty else {
                throw error("payload is \(message.payload.count) bytes, expected none")
            }
            return .configChange
        }
        guard message.payload.count == VhostUserVringState.wireSize else {
            throw error("payload is \(message.payload.count) bytes, expected \(VhostUserVringState.wireSize)")
        }
        var reader = VhostUserByteReader(message.payload)
        guard let state = VhostUserVringState(reader: &reader) else { throw error("payload ended early") }
        return code == .vringCall ? .vringCall(state) : .vringErr(state)
    }
}
