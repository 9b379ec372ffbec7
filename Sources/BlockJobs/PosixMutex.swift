import Glibc

/// A value behind a pthread mutex. Used for the job mutex instead of Synchronization.Mutex
/// because ThreadSanitizer sees pthread_mutex_lock/unlock but not the futex-based
/// Synchronization.Mutex of the Linux toolchain (it reports races between two accesses
/// that both hold one; checked with a two-thread counter), and the job mutex's discipline
/// is meant to be checked under TSan.
final class PosixMutex<Value: ~Copyable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    init(_ value: consuming Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
