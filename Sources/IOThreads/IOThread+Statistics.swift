import Synchronization

/// What query-iothreads and the statistics report of an IOThread: its polling settings and
/// counters, written by the thread, read from any thread (relaxed atomics).
extension IOThread {
    public var pollMaxNs: UInt64 { pollWindow.maxNs }
    public var pollGrow: UInt64 { pollWindow.grow }
    public var pollShrink: UInt64 { pollWindow.shrink }
    public var pollCurrentNs: UInt64 { pollWindowNs.load(ordering: .relaxed) }
    public var pollHits: UInt64 { pollHitCount.load(ordering: .relaxed) }
    public var pollMisses: UInt64 { pollMissCount.load(ordering: .relaxed) }
    public var sleeps: UInt64 { sleepCount.load(ordering: .relaxed) }
    /// Time asleep waiting for work, time busy-polling for it, and the rest since the thread
    /// started (handling kicks and completions, submitting), in nanoseconds.
    public var sleepNanoseconds: UInt64 { sleepNs.load(ordering: .relaxed) }
    public var pollNanoseconds: UInt64 { pollNs.load(ordering: .relaxed) }
    public var busyNanoseconds: UInt64 {
        let started = startedNs.load(ordering: .relaxed)
        guard started != 0 else { return 0 }
        let elapsed = monotonicNanoseconds() &- started
        let idle = sleepNanoseconds &+ pollNanoseconds
        return elapsed > idle ? elapsed - idle : 0
    }
    /// Times polling gave the CPU away because requests were waiting on the kernel.
    public var pollYields: UInt64 { pollYieldCount.load(ordering: .relaxed) }
}
