import CSpindle
import Glibc

/// A listening Unix stream socket at a path (an export's vhost-user socket, a QMP monitor),
/// created owner-only (0600) and non-blocking, and listening from the moment its file appears.
/// Replaces a stale socket file left by an earlier run, but never a file of another kind.
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
        if lstat(path, &info) == 0, (info.st_mode & S_IFMT) != S_IFSOCK {
            throw UnixListenerError("'\(path)' exists and is not a socket; remove it or choose another \(pathOption)")
        }
        // Bound and listening under a temporary name first, then renamed into place (which also
        // replaces a stale socket from an earlier run atomically): whoever sees the socket file
        // can connect at once. Bound at `path` directly, a client that waits for the file could
        // be refused between bind and listen (seen in 5-9 % of quick connects on a busy machine).
        let staging = "\(path).\(getpid()).new"
        let bindPath = staging.utf8.count < capacity ? staging : path
        if lstat(bindPath, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK { unlink(bindPath) }
        let fd = spindle_unix_bind(bindPath)
        guard fd >= 0 else {
            throw UnixListenerError("cannot bind \(what) '\(path)': \(String(cString: strerror(-fd))) (does its directory exist and is it writable?)")
        }
        func fail(_ action: String, _ e: Int32) -> UnixListenerError {
            Glibc.close(fd)
            unlink(bindPath)
            return UnixListenerError("cannot \(action) \(what) '\(path)': \(String(cString: strerror(e)))")
        }
        // Already 0600 from bind (see spindle_unix_bind); made sure of here, before anyone can connect.
        guard chmod(bindPath, 0o600) == 0 else { throw fail("make owner-only", errno) }
        guard listen(fd, 16) == 0 else { throw fail("listen on", errno) }
        if bindPath != path, rename(bindPath, path) != 0 { throw fail("put in place", errno) }
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
