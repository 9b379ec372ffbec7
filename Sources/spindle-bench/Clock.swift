#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_MONOTONIC in nanoseconds (vDSO, no syscall).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// CPU time (user + system) the calling thread has used, in nanoseconds.
func threadCPUNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// CPU time (utime + stime) of process `pid` from /proc/PID/stat, in microseconds; nil if
/// the process is gone or the file cannot be parsed. Clock-tick resolution (10 ms).
func processCPUMicroseconds(pid: Int32) -> UInt64? {
    let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard count > 0 else { return nil }
    // The command name (field 2) may contain spaces and parentheses: start after the last ')'.
    guard let close = buffer[0..<count].lastIndex(of: UInt8(ascii: ")")) else { return nil }
    let fields = buffer[(close + 1)..<count].split(separator: UInt8(ascii: " "))
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    guard fields.count > 12,
          let utime = UInt64(String(decoding: fields[11], as: UTF8.self)),
          let stime = UInt64(String(decoding: fields[12], as: UTF8.self)) else { return nil }
    let ticksPerSecond = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
    return (utime + stime) * 1_000_000 / ticksPerSecond
}
