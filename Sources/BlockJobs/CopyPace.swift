import Glibc

/// A copying job's speed limit (QEMU's `speed`, bytes per second; 0: none), for the job's
/// own thread: count what was copied, then `pace` sleeps (interruptibly, through the job
/// driver) while the copy is ahead of the limit. A fresh window each second, so a pause or a
/// slow stretch does not buy a burst afterwards. The limit is read from the job's record
/// (job mutex, never taken by IOThreads) at each check, so block-job-set-speed applies at
/// once; a changed limit starts a fresh window (what was copied under the old one does not
/// count against the new one, as QEMU's ratelimit_set_speed).
struct CopyPace {
    private var windowStart: UInt64 = CopyPace.now()
    private var windowBytes: UInt64 = 0
    private var windowSpeed: UInt64?

    mutating func restart() {
        restart(at: Self.now())
    }

    mutating func copied(_ bytes: UInt64) { windowBytes += bytes }

    mutating func pace(_ driver: JobDriver) {
        let now = Self.now()
        let delay = self.delay(speed: driver.speed, now: now)
        if delay > 0 { _ = driver.sleep(nanoseconds: delay) }
        // The next window starts after the sleep: one started before it would count the
        // sleep as time already spent and let a burst through.
        if now &- windowStart > 1_000_000_000 { restart() }
    }

    /// How long to sleep at `now` (nanoseconds, at most a second) to keep the window's
    /// bytes within `speed`; 0 when unlimited or not ahead.
    mutating func delay(speed: UInt64, now: UInt64) -> UInt64 {
        if let previous = windowSpeed, previous != speed { restart(at: now) }
        windowSpeed = speed
        guard speed > 0 else { return 0 }
        let elapsed = now &- windowStart
        let due = windowBytes.multipliedFullWidth(by: 1_000_000_000)
        let dueNanoseconds = due.high >= speed ? UInt64.max : speed.dividingFullWidth(due).quotient
        return dueNanoseconds > elapsed ? min(dueNanoseconds - elapsed, 1_000_000_000) : 0
    }

    mutating func restart(at now: UInt64) {
        windowStart = now
        windowBytes = 0
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
