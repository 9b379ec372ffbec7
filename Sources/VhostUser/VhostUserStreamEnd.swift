#if canImport(Glibc)
import Glibc
#endif

/// Why a vhost-user connection can no longer be read from. In every case the caller
/// closes the connection.
public enum VhostUserStreamEnd: Error, Sendable, Hashable, CustomStringConvertible {
    /// The front-end closed the socket between messages (an orderly disconnect).
    case peerClosed
    /// The front-end closed the socket part-way through a message.
    case peerClosedMidMessage(bytesReceived: Int)
    /// recvmsg failed, e.g. ECONNRESET.
    case socketError(errno: Int32)
    /// The byte stream broke the protocol (oversized payload, too many fds).
    case protocolError(VhostUserProtocolError)

    public var description: String {
        switch self {
        case .peerClosed:
            "front-end closed the connection"
        case .peerClosedMidMessage(let bytes):
            "front-end closed the connection in the middle of a message (\(bytes) bytes of it received)"
        case .socketError(let code):
            "reading from the vhost-user socket failed: \(describeErrno(code))"
        case .protocolError(let error):
            error.description
        }
    }
}

/// `strerror` text plus the symbolic value, for log lines.
func describeErrno(_ code: Int32) -> String {
    "\(String(cString: strerror(code))) (errno \(code))"
}
