import BlockCommon
import Glibc

/// After a connect that timed out, tells the two usual causes apart for the log line: no
/// monitor listens at the given addresses, or one does and refused the key (librados keeps
/// retrying a refused key until its mount timeout, so both look like a timeout).
enum RbdMonitorProbe {
    /// Whether any of `servers` (numeric addresses only) accepts a TCP connection within
    /// `milliseconds`. nil: nothing could be probed (host names, no servers).
    static func anyListening(_ servers: [RbdServer], milliseconds: Int32 = 1000) -> Bool? {
        var probed = false
        for server in servers {
            guard let port = UInt16(server.port) else { continue }
            if let reachable = probe(host: server.host, port: port, milliseconds: milliseconds) {
                probed = true
                if reachable { return true }
            }
        }
        return probed ? false : nil
    }

    private static func probe(host: String, port: UInt16, milliseconds: Int32) -> Bool? {
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET, host, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            return withUnsafePointer(to: &v4) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connects(AF_INET, $0, socklen_t(MemoryLayout<sockaddr_in>.size), milliseconds) }
            }
        }
        if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            return withUnsafePointer(to: &v6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connects(AF_INET6, $0, socklen_t(MemoryLayout<sockaddr_in6>.size), milliseconds) }
            }
        }
        return nil
    }

    private static func connects(_ family: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t, _ milliseconds: Int32) -> Bool {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if connect(fd, __CONST_SOCKADDR_ARG(__sockaddr__: address), length) == 0 { return true }
        guard errno == EINPROGRESS else { return false }
        var ready = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&ready, 1, milliseconds) == 1 else { return false }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 else { return false }
        return error == 0
    }
}
