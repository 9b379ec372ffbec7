import Glibc
import Logging

/// sd_notify(3) without libsystemd: one datagram per message to the unix socket named by
/// $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@').
public struct SystemdNotifier: Sendable {
    public let socketName: String

    /// The notifier systemd asked for, or nil when not started by a Type=notify service.
    public static func fromEnvironment() -> SystemdNotifier? {
        guard let value = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), !value.isEmpty else { return nil }
        return SystemdNotifier(socketName: value)
    }

    public init(socketName: String) { self.socketName = socketName }

    /// Sends `message` ("READY=1", "STATUS=...", newline-separated assignments). A failure
    /// is logged, never fatal: the daemon serves whether or not systemd hears it.
    public func send(_ message: String) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketName.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard (path.first == 0 || path.first == UInt8(ascii: "/")), path.count < capacity else {
            Logger(label: "spindle").warning("NOTIFY_SOCKET '\(socketName)' is not a unix socket path or @abstract name; systemd is not told \(message)")
            return
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        // An abstract name's length is exact (no terminating NUL); a path's includes the NUL.
        let length = MemoryLayout<sa_family_t>.size + path.count + (path.first == 0 ? 0 : 1)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return report(message) }
        defer { close(fd) }
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), __CONST_SOCKADDR_ARG(__sockaddr__: socketAddress), socklen_t(length)) }
            }
        }
        if sent < 0 { report(message) }
    }

    private func report(_ message: String) {
        let cause = String(cString: strerror(errno))
        Logger(label: "spindle").warning("cannot notify systemd through '\(socketName)': \(cause) (message \(message.split(separator: "\n").first ?? ""))")
    }
}

extension Daemon {
    /// What `systemctl status` shows: exports, nodes, connected frontends.
    public var statusLine: String {
        let connected = exports.filter(\.hasFrontend).count
        return "\(exports.count) export(s), \(graph.nodes.count) node(s), \(connected) frontend(s) connected"
    }

    /// READY=1 once every export listens and the monitors accept (after start and --pidfile).
    public func notifyReady() {
        systemd?.send("READY=1\nSTATUS=serving: \(statusLine)")
    }

    /// STOPPING=1 as the shutdown begins.
    public func notifyStopping() {
        systemd?.send("STOPPING=1\nSTATUS=stopping")
    }

    /// After a QMP change to what is served (cheap: one datagram, only under systemd).
    func notifyStatus() {
        systemd?.send("STATUS=serving: \(statusLine)")
    }
}
