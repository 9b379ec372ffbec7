#if canImport(Glibc)
import Glibc
#endif

/// The whole machine's CPU time from the first line of /proc/stat, in microseconds, so a
/// run can show how much of the machine was busy with something other than the client
/// and the backend (a noisy neighbour makes the numbers meaningless).
struct MachineCPUSample: Sendable {
    /// user + nice + system + irq + softirq + steal, over all CPUs.
    var busyMicroseconds: UInt64
    /// steal alone: time the hypervisor ran someone else on our vCPUs.
    var stealMicroseconds: UInt64

    static func sample() -> MachineCPUSample? {
        let fd = open("/proc/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0, let end = buffer[0..<count].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let fields = buffer[0..<end].split(separator: UInt8(ascii: " ")).dropFirst()
            .compactMap { UInt64(String(decoding: $0, as: UTF8.self)) }
        // user nice system idle iowait irq softirq steal ...
        guard fields.count >= 8 else { return nil }
        let ticksPerSecond = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        let user: UInt64 = fields[0] + fields[1]
        let system: UInt64 = fields[2] + fields[5] + fields[6]
        let busy: UInt64 = user + system + fields[7]
        return MachineCPUSample(busyMicroseconds: busy * 1_000_000 / ticksPerSecond,
                                stealMicroseconds: fields[7] * 1_000_000 / ticksPerSecond)
    }
}
