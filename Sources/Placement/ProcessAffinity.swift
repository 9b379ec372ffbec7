import Glibc

/// The CPUs the calling thread may run on (`sched_getaffinity`), or nil if the call fails.
///
/// Call it from the main thread before pinning any thread: it reports the calling thread's
/// mask, which is the process's mask only until someone narrows it.
public func processAllowedCPUs() -> Set<Int>? {
    // 4096 CPUs: larger than glibc's cpu_set_t (1024), so big hosts are not cut off.
    var words = [UInt64](repeating: 0, count: 64)
    let result = words.withUnsafeMutableBytes { buffer in
        sched_getaffinity(0, buffer.count, buffer.baseAddress!.assumingMemoryBound(to: cpu_set_t.self))
    }
    guard result == 0 else { return nil }
    var cpus = Set<Int>()
    for (wordIndex, word) in words.enumerated() where word != 0 {
        for bit in 0..<64 where word & (1 << UInt64(bit)) != 0 {
            cpus.insert(wordIndex * 64 + bit)
        }
    }
    return cpus
}
