/// A vhost-user message that breaks the protocol: wrong payload size, missing or extra file
/// descriptors, an oversized message. The description names the request by its spec name
/// and says what was wrong, e.g. "SET_VRING_ADDR: payload is 20 bytes, expected 40".
///
/// The usual reaction is to log it and close the connection.
public struct VhostUserProtocolError: Error, CustomStringConvertible, Sendable, Hashable {
    /// The request code from the offending message's header, if a header was read.
    public var request: UInt32?
    /// What was wrong, without the request name.
    public var problem: String

    public init(request: UInt32?, _ problem: String) {
        self.request = request
        self.problem = problem
    }

    public init(_ code: VhostUserRequestCode, _ problem: String) {
        self.init(request: code.rawValue, problem)
    }

    public var description: String {
        guard let request else { return "vhost-user: \(problem)" }
        return "\(VhostUserRequestCode.name(ofRawCode: request)): \(problem)"
    }
}
