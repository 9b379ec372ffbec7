import ControlThread

/// Runs `work` on the control thread and blocks the calling plain thread (a job's body)
/// until it is done. Never call it from the control thread itself, or with the job mutex held.
func runOnControlThread<T: Sendable>(_ work: @escaping @Sendable @ControlActor () async -> T) -> T {
    let box = ResultBox<T>()
    Task { @ControlActor in box.fulfil(await work()) }
    return box.wait()
}

private final class ResultBox<T: Sendable>: Sendable {
    private let value = PosixMutex<T?>(nil)
    private let ready = JobWakeup()

    func fulfil(_ result: T) {
        value.withLock { $0 = result }
        ready.post()
    }

    func wait() -> T {
        while true {
            if let result = value.withLock({ $0 }) { return result }
            ready.wait(nanoseconds: nil)
        }
    }
}
