/// Why the frontend gave up: one line naming the step and what was wrong, e.g.
/// "SET_VRING_ADDR: backend refused it (REPLY_ACK status 1)".
public struct FrontendError: Error, CustomStringConvertible, Sendable, Hashable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// `strerror` text and the errno number, for error lines.
func errnoText(_ code: Int32) -> String {
    "\(String(cString: strerror(code))) (errno \(code))"
}
