import CSpindle
import Glibc

/// A listening Unix stream socket at a path, created owner-only (0600) and non-blocking.
/// Removes a stale socket file left by an earlier run, but never a file of another kind.
struct UnixListener {
    let fd: Int32
    let path: String

    init(path: String) throws(ExportError) {
        let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        guard !path.isEmpty, path.utf8.count < capacity else {
            throw ExportError("socket path '\(path)' is empty or longer than \(capacity - 1) bytes; use a shorter path")
        }
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw ExportError("'\(path)' exists and is not a socket; remove it or choose another addr.path")
            }
            unlink(path)  // a stale socket from an earlier run
        }
        let fd = spindle_unix_bind(path)
        guard fd >= 0 else {
            throw ExportError("cannot bind socket '\(path)': \(String(cString: strerror(-fd))) (does its directory exist and is it writable?)")
        }
        chmod(path, 0o600)
        guard listen(fd, 16) == 0 else {
            let e = errno
            Glibc.close(fd)
            unlink(path)
            throw ExportError("cannot listen on '\(path)': \(String(cString: strerror(e)))")
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

public struct ExportError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
