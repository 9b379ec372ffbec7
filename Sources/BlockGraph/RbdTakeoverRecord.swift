import Glibc

/// Who took an rbd image's exclusive lock, kept in the image's metadata (key
/// `spindle.lock-holder`, `rbd image-meta get IMAGE spindle.lock-holder`) by the Spindle that
/// took it: the client address the lock shows, and the process behind it (this host's boot
/// id, its pid namespace, pid and start time). A Spindle restarted after a crash finds its
/// dead predecessor's lock still standing until Ceph expires the dead client's watch (~30 s);
/// with this record it can prove the holder is that predecessor and gone, and break the lock
/// at once. In the image rather than in a file beside the socket: it travels with the image
/// (any daemon on any host reads the same record), names the lock's current holder exactly
/// (a record from an earlier holder names another address), and needs no directory.
public struct RbdTakeoverRecord: Equatable, Sendable {
    static let metadataKey = "spindle.lock-holder"
    static let version = "spindle-lock-holder/1"
    /// Longer values are not ours (the field lengths below bound a genuine one).
    static let maximumLength = 512

    var address: String
    var bootID: String
    var pidNamespace: String
    var pid: Int32
    var startTime: UInt64
    var host: String

    /// One line: `spindle-lock-holder/1 address=... boot=... pidns=... pid=... start=... host=...`.
    var encoded: String {
        "\(Self.version) address=\(address) boot=\(bootID) pidns=\(pidNamespace) pid=\(pid) start=\(startTime) host=\(host)"
    }

    /// Parses a metadata value, which anyone with access to the image may have written: every
    /// field is checked, anything unexpected gives nil (and then nothing is broken).
    init?(decoding text: String) {
        guard text.utf8.count <= Self.maximumLength else { return nil }
        let words = text.split(separator: " ", omittingEmptySubsequences: false)
        guard words.count == 7, words[0] == Self.version else { return nil }
        var fields: [String: String] = [:]
        for word in words.dropFirst() {
            guard let equals = word.firstIndex(of: "=") else { return nil }
            let key = String(word[..<equals]), value = String(word[word.index(after: equals)...])
            guard !value.isEmpty, fields[key] == nil else { return nil }
            fields[key] = value
        }
        guard let address = fields["address"], let bootID = fields["boot"], let pidNamespace = fields["pidns"],
              let pidText = fields["pid"], let pid = Int32(pidText), pid > 0,
              let startText = fields["start"], let startTime = UInt64(startText), let host = fields["host"],
              bootID.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || Self.isHexDigit($0) }), bootID.utf8.count == 36,
              pidNamespace.hasPrefix("pid:["), pidNamespace.hasSuffix("]")
        else { return nil }
        self.init(address: address, bootID: bootID, pidNamespace: pidNamespace, pid: pid, startTime: startTime, host: host)
    }

    init(address: String, bootID: String, pidNamespace: String, pid: Int32, startTime: UInt64, host: String) {
        self.address = address
        self.bootID = bootID
        self.pidNamespace = pidNamespace
        self.pid = pid
        self.startTime = startTime
        self.host = host
    }

    /// This process, holding the lock as `address`; nil if /proc cannot tell who we are.
    static func thisProcess(address: String) -> RbdTakeoverRecord? {
        guard let boot = ProcessIdentity.bootID, let namespace = ProcessIdentity.pidNamespace,
              let start = ProcessIdentity.startTime(of: getpid()) else { return nil }
        return RbdTakeoverRecord(address: address, bootID: boot, pidNamespace: namespace, pid: getpid(),
                                 startTime: start, host: ProcessIdentity.hostName)
    }

    /// True only if the recorded process provably no longer runs: it ran on this very boot of
    /// this host, in our pid namespace, and its pid is gone or now belongs to a process that
    /// started at another time. Another host, another boot (or a clone), another container's
    /// namespace, or /proc refusing to answer: not provable, so false.
    var isProvablyGone: Bool {
        guard bootID == ProcessIdentity.bootID, pidNamespace == ProcessIdentity.pidNamespace else { return false }
        switch ProcessIdentity.startTimeLookup(of: pid) {
        case .gone: return true
        case .started(let time): return time != startTime
        case .unknown: return false
        }
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }
}

/// What /proc says about this process and others (Linux).
enum ProcessIdentity {
    enum StartTime: Equatable { case gone, started(UInt64), unknown }

    /// This boot of this host: a random UUID the kernel draws at boot.
    static var bootID: String? {
        readSmallFile("/proc/sys/kernel/random/boot_id").map { $0.trimmingNewlines }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The pid namespace pids are numbered in, as `pid:[INODE]`.
    static var pidNamespace: String? {
        var buffer = [CChar](repeating: 0, count: 64)
        let length = readlink("/proc/self/ns/pid", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    static var hostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        let name = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return name.isEmpty || name.contains(" ") ? "unknown" : name
    }

    static func startTime(of pid: Int32) -> UInt64? {
        if case .started(let time) = startTimeLookup(of: pid) { return time }
        return nil
    }

    /// Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, it names one process
    /// of this boot (a pid reused later has a later start time).
    static func startTimeLookup(of pid: Int32) -> StartTime {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno == ENOENT || errno == ESRCH ? .gone : .unknown }
        defer { close(fd) }
        guard let text = readAll(fd) else { return errno == ESRCH ? .gone : .unknown }
        // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
        guard let close = text.lastIndex(of: ")") else { return .unknown }
        let rest = text[text.index(after: close)...].split(separator: " ")
        // rest[0] is field 3 (state); field 22 is rest[19].
        guard rest.count > 19, let time = UInt64(rest[19]) else { return .unknown }
        return .started(time)
    }

    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return readAll(fd)
    }

    private static func readAll(_ fd: Int32) -> String? {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var filled = 0
        while filled < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return nil }
            if n == 0 { break }
            filled += n
        }
        return String(decoding: bytes[..<filled], as: UTF8.self)
    }
}

private extension String {
    var trimmingNewlines: String {
        var text = self
        while text.last == "\n" || text.last == "\r" { text.removeLast() }
        return text
    }
}
