import Glibc

/// A value behind a pthread mutex: the one mutex type of the project. Not
/// Synchronization.Mutex, because ThreadSanitizer sees pthread_mutex_lock/unlock but not the
/// futex-based Synchronization.Mutex of the Linux toolchain (it reports races between two
/// accesses that both hold one; checked with a two-thread counter, Tests/Sanitizers.md).
/// Never on the hot path: IOThreads take no lock per request.
public final class PosixMutex<Value: ~Copyable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: consuming Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
