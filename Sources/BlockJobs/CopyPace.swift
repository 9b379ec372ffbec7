import Glibc

/// A copying job's speed limit (QEMU's `speed`, bytes per second; 0: none), for the job's
/// own thread: count what was copied, then `pace` sleeps (interruptibly, through the job
/// driver) while the copy is ahead of the limit. A fresh window each second, so a pause or a
/// slow stretch does not buy a burst afterwards.
struct CopyPace {
    private var windowStart: UInt64 = CopyPace.now()
    private var windowBytes: UInt64 = 0

    mutating func restart() {
        windowStart = Self.now()
        windowBytes = 0
    }

    mutating func copied(_ bytes: UInt64) { windowBytes += bytes }

    mutating func pace(_ driver: JobDriver) {
        let speed = driver.speed
        guard speed > 0 else { return }
        let elapsed = Self.now() &- windowStart
        let due = windowBytes * 1_000_000_000 / speed
        if due > elapsed {
            _ = driver.sleep(nanoseconds: min(due - elapsed, 1_000_000_000))
        }
        if elapsed > 1_000_000_000 { restart() }
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
