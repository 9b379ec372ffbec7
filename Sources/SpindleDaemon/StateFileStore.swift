import Glibc

/// Reads and replaces the state file on disk. A write never leaves PATH missing or partial:
/// the new text goes to PATH.tmp, is fsynced, the previous generation is kept as PATH.bak
/// (a hard link), PATH.tmp is renamed over PATH and the directory is fsynced.
struct StateFileStore: Sendable {
    let path: String

    var backupPath: String { path + ".bak" }
    private var temporaryPath: String { path + ".tmp" }
    private var directory: String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The file's bytes, or nil if it does not exist (a first start: empty state).
    func read() throws(StateFileError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw StateFileError("cannot open it: \(Self.errorText())")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw StateFileError("cannot read it: \(Self.errorText())")
            }
            if count == 0 { return bytes }
            bytes += chunk[..<count]
        }
    }

    /// Takes `PATH.lock` (flock) for as long as the returned descriptor stays open, so that
    /// two daemons never write one state file over each other.
    func lock() throws(StateFileError) -> Int32 {
        let lockPath = path + ".lock"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StateFileError("cannot open '\(lockPath)': \(Self.errorText())") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let cause = errno == EWOULDBLOCK ? "another spindle uses this state file (it holds '\(lockPath)')" : Self.errorText()
            close(fd)
            throw StateFileError(cause)
        }
        return fd
    }

    /// Fails now, at start-up, rather than at the first QMP change, if the file's directory
    /// does not take new files.
    func checkWritable() throws(StateFileError) {
        guard access(directory, W_OK) == 0 else {
            throw StateFileError("its directory '\(directory)' is not writable: \(Self.errorText())")
        }
    }

    /// Replaces the file with `bytes` atomically and durably.
    func write(_ bytes: [UInt8]) throws(StateFileError) {
        let fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StateFileError("cannot create '\(temporaryPath)': \(Self.errorText())") }
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let cause = Self.errorText()
                close(fd)
                unlink(temporaryPath)
                throw StateFileError("cannot write '\(temporaryPath)': \(cause)")
            }
            written += count
        }
        guard fsync(fd) == 0 else {
            let cause = Self.errorText()
            close(fd)
            unlink(temporaryPath)
            throw StateFileError("cannot fsync '\(temporaryPath)': \(cause)")
        }
        close(fd)
        // Keep the previous generation; PATH itself stays in place until the rename.
        unlink(backupPath)
        if link(path, backupPath) != 0 && errno != ENOENT {
            throw StateFileError("cannot keep the previous file as '\(backupPath)': \(Self.errorText())")
        }
        guard rename(temporaryPath, path) == 0 else {
            let cause = Self.errorText()
            unlink(temporaryPath)
            throw StateFileError("cannot rename '\(temporaryPath)' to '\(path)': \(cause)")
        }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw StateFileError("cannot open directory '\(directory)' to fsync it: \(Self.errorText())") }
        defer { close(directoryFD) }
        guard fsync(directoryFD) == 0 else { throw StateFileError("cannot fsync directory '\(directory)': \(Self.errorText())") }
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }
}
