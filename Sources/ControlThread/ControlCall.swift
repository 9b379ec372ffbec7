import Glibc

/// Runs `work` on the control thread and blocks the calling plain thread (the main thread,
/// a block job's body) until it is done: the one bridge from a thread that may block onto
/// the control thread. Never call it from the control thread itself (it would wait for
/// itself), nor while holding a lock the control thread may take.
public func runOnControlThread<T: Sendable>(_ work: @escaping @Sendable @ControlActor () async -> T) -> T {
    precondition(!ControlActor.isOnControlThread, "runOnControlThread called on the control thread")
    let box = ControlCallResult<T>()
    Task { @ControlActor in box.fulfil(await work()) }
    return box.wait()
}

/// The result of a control-thread call and a semaphore to wait for it (both seen by
/// ThreadSanitizer: a pthread mutex and sem_post/sem_wait).
private final class ControlCallResult<T: Sendable>: @unchecked Sendable {
    private let value = PosixMutex<T?>(nil)
    private let ready = PosixSemaphore()

    func fulfil(_ result: T) {
        value.withLock { $0 = result }
        ready.post()
    }

    func wait() -> T {
        while true {
            if let result = value.withLock({ $0 }) { return result }
            ready.wait()
        }
    }
}
