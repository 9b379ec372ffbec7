import CSpindle
import Glibc

/// A listening Unix stream socket at a path (an export's vhost-user socket, a QMP monitor),
/// created owner-only (0600) and non-blocking. Replaces a stale socket file left by an
/// earlier run, but never a file of another kind.
public struct UnixListener: Sendable {
    public let fd: Int32
    public let path: String

    /// `what` names the socket in errors, e.g. "monitor socket"; `pathOption` the option
    /// an operator changes to pick another path.
    public init(path: String, what: String = "socket", pathOption: String = "the socket path") throws(UnixListenerError) {
        let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        guard !path.isEmpty, path.utf8.count < capacity, !path.utf8.contains(0) else {
            throw UnixListenerError("\(what) path '\(path)' is empty or longer than \(capacity - 1) bytes; use a shorter path")
        }
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw UnixListenerError("'\(path)' exists and is not a socket; remove it or choose another \(pathOption)")
            }
            unlink(path)  // a stale socket from an earlier run
        }
        let fd = spindle_unix_bind(path)
        guard fd >= 0 else {
            throw UnixListenerError("cannot bind \(what) '\(path)': \(String(cString: strerror(-fd))) (does its directory exist and is it writable?)")
        }
        // Already 0600 from bind (see spindle_unix_bind); made sure of here, before anyone can connect.
        guard chmod(path, 0o600) == 0 else {
            let e = errno
            Glibc.close(fd)
            unlink(path)
            throw UnixListenerError("cannot make \(what) '\(path)' owner-only: \(String(cString: strerror(e)))")
        }
        guard listen(fd, 16) == 0 else {
            let e = errno
            Glibc.close(fd)
            unlink(path)
            throw UnixListenerError("cannot listen on \(what) '\(path)': \(String(cString: strerror(e)))")
        }
        self.fd = fd
        self.path = path
    }

    /// Accepts one pending connection (non-blocking, close-on-exec), or nil.
    public func accept() -> Int32? {
        let fd = spindle_accept(self.fd)
        return fd >= 0 ? fd : nil
    }

    /// Closes the socket and removes its file.
    public func close() {
        Glibc.close(fd)
        unlink(path)
    }
}

public struct UnixListenerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
