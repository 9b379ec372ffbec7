import CSpindle
import Glibc

/// A listening Unix stream socket at a path, created owner-only (0600) and non-blocking.
/// Removes a stale socket file left by an earlier run, but never a file of another kind.
struct UnixListener {
    let fd: Int32
    let path: String

    init(path: String) throws(ExportError) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw ExportError("socket path '\(path)' is empty or longer than \(capacity - 1) bytes; use a shorter path")
        }
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw ExportError("'\(path)' exists and is not a socket; remove it or choose another addr.path")
            }
            unlink(path)  // a stale socket from an earlier run
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ExportError("cannot create a socket: \(String(cString: strerror(errno)))") }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw ExportError("cannot bind socket '\(path)': \(String(cString: strerror(e))) (does its directory exist and is it writable?)")
        }
        chmod(path, 0o600)
        guard listen(fd, 16) == 0 else {
            let e = errno
            close(fd)
            unlink(path)
            throw ExportError("cannot listen on '\(path)': \(String(cString: strerror(e)))")
        }
        self.fd = fd
        self.path = path
    }

    /// Accepts one pending connection (non-blocking, close-on-exec), or nil.
    func accept() -> Int32? {
        let fd = accept4(self.fd, nil, nil, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
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
