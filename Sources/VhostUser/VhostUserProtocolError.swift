/// A vhost-user message that breaks the protocol: wrong payload size, missing or extra file
/// descriptors, an oversized message. The description names the request by its spec name
/// and says what was wrong, e.g. "SET_VRING_ADDR: payload is 20 bytes, expected 40".
///
/// The usual reaction is to log it and close the connection.
public struct VhostUserProtocolError: Error, CustomStringConvertible, Sendable, Hashable {
    /// The request code from the offending message's header, if a header was read.
    public var request: UInt32?
    /// The spec name of that request (front-end or back-end channel, as appropriate).
    public var requestName: String?
    /// What was wrong, without the request name.
    public var problem: String

    /// An error about a front-end request code (or about no particular request).
    public init(request: UInt32?, _ problem: String) {
        self.request = request
        self.requestName = request.map { VhostUserRequestCode.name(ofRawCode: $0) }
        self.problem = problem
    }

    public init(_ code: VhostUserRequestCode, _ problem: String) {
        self.init(request: code.rawValue, problem)
    }

    /// An error about a message on the back-end channel.
    public init(backendRequest code: UInt32, _ problem: String) {
        self.request = code
        self.requestName = VhostUserBackendRequestCode.name(ofRawCode: code)
        self.problem = problem
    }

    public var description: String {
        guard let requestName else { return "vhost-user: \(problem)" }
        return "\(requestName): \(problem)"
    }
}
