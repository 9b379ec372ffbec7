import Glibc

/// A counting POSIX semaphore: a thread waits for another to post. ThreadSanitizer sees
/// sem_post/sem_wait as synchronisation (as it does PosixMutex). Posting takes no lock, so
/// it may be done while holding one (a job's wake-up under the job mutex).
public final class PosixSemaphore: @unchecked Sendable {
    private let semaphore: UnsafeMutablePointer<sem_t>

    public init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    public func post() { sem_post(semaphore) }

    /// Waits for a post, or at most `nanoseconds` (nil: no limit).
    public func wait(nanoseconds: UInt64? = nil) {
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
