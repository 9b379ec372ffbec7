import CSpindle
import Glibc

/// A listening Unix stream socket for a monitor, created owner-only (0600) and non-blocking.
/// Removes a stale socket file left by an earlier run, but never a file of another kind.
struct MonitorSocketListener {
    let fd: Int32
    let path: String

    init(path: String) throws(QMPServerError) {
        let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        guard !path.isEmpty, path.utf8.count < capacity, !path.utf8.contains(0) else {
            throw QMPServerError("monitor socket path '\(path)' is empty or longer than \(capacity - 1) bytes; use a shorter path")
        }
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw QMPServerError("'\(path)' exists and is not a socket; remove it or choose another monitor socket path")
            }
            unlink(path)  // a stale socket from an earlier run
        }
        let fd = spindle_unix_bind(path)
        guard fd >= 0 else {
            throw QMPServerError("cannot bind monitor socket '\(path)': \(String(cString: strerror(-fd))) (does its directory exist and is it writable?)")
        }
        chmod(path, 0o600)
        guard listen(fd, 16) == 0 else {
            let e = errno
            Glibc.close(fd)
            unlink(path)
            throw QMPServerError("cannot listen on monitor socket '\(path)': \(String(cString: strerror(e)))")
        }
        self.fd = fd
        self.path = path
    }

    /// Accepts one pending connection (non-blocking, close-on-exec), or nil.
    func accept() -> Int32? {
        let fd = spindle_accept(self.fd)
        return fd >= 0 ? fd : nil
    }

    func close() {
        Glibc.close(fd)
        unlink(path)
    }
}

/// The monitor socket cannot be set up.
public struct QMPServerError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
