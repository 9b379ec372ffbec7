/// Request codes the back-end sends to the front-end over the back-end channel (the socket
/// passed with SET_BACKEND_REQ_FD), numbered as in vhost-user.rst ("Back-end message
/// types"). These were formerly called `VHOST_USER_SLAVE_*`.
public enum VhostUserBackendRequestCode: UInt32, Sendable, CaseIterable {
    case iotlbMsg = 1
    /// No payload; asks the front-end to re-read the config space with GET_CONFIG.
    case configChangeMsg = 2
    case vringHostNotifierMsg = 3
    case vringCall = 4
    case vringErr = 5
    case sharedObjectAdd = 6
    case sharedObjectRemove = 7
    case sharedObjectLookup = 8

    /// The spec's name without the `VHOST_USER_` prefix, e.g. `BACKEND_CONFIG_CHANGE_MSG`.
    public var name: String {
        switch self {
        case .iotlbMsg: "BACKEND_IOTLB_MSG"
        case .configChangeMsg: "BACKEND_CONFIG_CHANGE_MSG"
        case .vringHostNotifierMsg: "BACKEND_VRING_HOST_NOTIFIER_MSG"
        case .vringCall: "BACKEND_VRING_CALL"
        case .vringErr: "BACKEND_VRING_ERR"
        case .sharedObjectAdd: "BACKEND_SHARED_OBJECT_ADD"
        case .sharedObjectRemove: "BACKEND_SHARED_OBJECT_REMOVE"
        case .sharedObjectLookup: "BACKEND_SHARED_OBJECT_LOOKUP"
        }
    }

    /// A name for any raw back-end request code: the spec name if known, else
    /// `back-end request 99`.
    public static func name(ofRawCode code: UInt32) -> String {
        VhostUserBackendRequestCode(rawValue: code)?.name ?? "back-end request \(code)"
    }
}

extension VhostUserBackendRequestCode: CustomStringConvertible {
    public var description: String { name }
}
