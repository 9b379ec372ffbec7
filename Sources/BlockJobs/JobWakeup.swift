import Glibc

/// Wakes a job's body from a sleep or a pause point: a counting semaphore, not a lock, so
/// posting it while the job mutex is held takes no second lock. Spurious wake-ups are fine:
/// the body always re-reads its state under the job mutex after waking.
final class JobWakeup: @unchecked Sendable {
    private let semaphore: UnsafeMutablePointer<sem_t>

    init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    func post() { sem_post(semaphore) }

    /// Waits for a post, or at most `nanoseconds` (nil: no limit).
    func wait(nanoseconds: UInt64?) {
        guard let nanoseconds else {
            while sem_wait(semaphore) != 0 && errno == EINTR {}
            return
        }
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let total = UInt64(deadline.tv_nsec) + nanoseconds % 1_000_000_000
        deadline.tv_sec += Int(nanoseconds / 1_000_000_000) + Int(total / 1_000_000_000)
        deadline.tv_nsec = Int(total % 1_000_000_000)
        while sem_timedwait(semaphore, &deadline) != 0 && errno == EINTR {}
    }
}
