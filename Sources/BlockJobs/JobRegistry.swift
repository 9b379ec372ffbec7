import ControlThread

// Locking rules for jobs (the lock order):
//
// 1. The job mutex (`JobRegistry.state`, a pthread mutex: see ControlThread/PosixMutex.swift) protects the job list and every job's state:
//    status, progress, error, requests (pause, cancel, complete, finalize) and the queue of
//    events not yet delivered. There is one for all jobs, as QEMU's job_mutex.
// 2. It is a leaf: no other lock (a BlockBackend's drain waiter, an IOThread inbox, the
//    QMP server) is taken while it is held, and nothing under it waits, does I/O or hops to
//    the control thread. The only calls made under it are sem_post (the job's wake-up PosixSemaphore, not a lock)
//    and appending to the event queue.
// 3. Events are delivered after it is released: the doorbell only schedules delivery; the
//    deliverer takes the mutex again to drain the queue in order.
// 4. Graph changes (drain, setRoot) happen on the control thread without the job mutex held.

/// Every job's state and the job list, behind the job mutex. Two APIs reach it, each in its
/// own file: the monitor API (JobMonitorAPI.swift), used by QMP commands, and the driver API
/// (JobDriverAPI.swift), used by a job's own body.
public final class JobRegistry: Sendable {
    let state = PosixMutex(JobTable())
    private let doorbell: @Sendable () -> Void

    /// `doorbell` is called (without the job mutex) whenever events were queued; it should
    /// arrange for `takeEvents()` to be called, e.g. on the control thread.
    public init(doorbell: @escaping @Sendable () -> Void = {}) {
        self.doorbell = doorbell
    }

    /// Runs `body` with the job mutex held; rings the doorbell afterwards if it queued events.
    func locked<R: Sendable, E: Error>(_ body: (inout JobTable) throws(E) -> R) throws(E) -> R {
        let (result, ring): (Result<R, E>, Bool) = state.withLock { table in
            let before = table.events.count
            let result: Result<R, E>
            do throws(E) {
                result = .success(try body(&table))
            } catch {
                result = .failure(error)
            }
            return (result, table.events.count > before)
        }
        if ring { doorbell() }
        return try result.get()
    }

    /// The events queued since the last call, oldest first.
    public func takeEvents() -> [JobEvent] {
        state.withLock { table in
            let events = table.events
            table.events.removeAll()
            return events
        }
    }
}

/// One job's state (inside the job mutex).
struct JobRecord {
    let id: String
    let type: String
    var status: JobStatus = .created
    var currentProgress: UInt64 = 0
    var totalProgress: UInt64 = 0
    var error: String?
    let autoFinalize: Bool
    let autoDismiss: Bool
    var speed: UInt64
    var userPaused = false
    var cancelRequested = false
    var completeRequested = false
    var finalizeRequested = false
    /// Wakes the job's body from a sleep or a pause point. A semaphore, not a lock: posting it
    /// under the job mutex takes no second lock. Spurious wake-ups are fine (the body re-reads
    /// its state under the job mutex after waking).
    let wakeup = PosixSemaphore()

    var eventInfo: BlockJobEventInfo {
        BlockJobEventInfo(id: id, type: type, length: totalProgress, offset: currentProgress, speed: speed)
    }
}

/// The job list and the event queue: the value the job mutex protects. Its public methods
/// are the monitor API; they can only be called with the mutex held (inside `withJobLock`).
public struct JobTable: ~Copyable {
    var records: [String: JobRecord] = [:]
    /// Creation order, for query-jobs.
    var order: [String] = []
    var events: [JobEvent] = []

    init() {}

    /// Moves a job to `status` if the state machine allows it, queueing JOB_STATUS_CHANGE.
    mutating func transition(_ id: String, to status: JobStatus) throws(JobError) {
        guard let from = records[id]?.status else { throw JobError.notFound }
        guard JobStateMachine.canTransition(from: from, to: status) else {
            throw JobError.illegalTransition(id: id, from: from, to: status)
        }
        records[id]!.status = status
        if from != status { events.append(.statusChange(id: id, status: status)) }
    }

    mutating func remove(_ id: String) {
        records[id] = nil
        order.removeAll { $0 == id }
    }
}
