// block-job-set-speed and query-block-jobs on the job table (the monitor API, see
// JobMonitorAPI.swift: called with the job mutex held, inside `withJobLock`).

/// What query-block-jobs shows of a block job (QEMU 7.2's BlockJobInfo).
public struct BlockJobInfo: Sendable, Equatable {
    public let id: String
    public let type: String
    public let status: JobStatus
    /// Bytes done and to do (QEMU's `offset` and `len`).
    public let offset: UInt64
    public let length: UInt64
    /// Bytes per second, 0 = unlimited.
    public let speed: UInt64
    /// job-pause (or block-job-pause) asked for a pause that job-resume did not lift yet.
    public let paused: Bool
    public let autoFinalize: Bool
    public let autoDismiss: Bool
    public let error: String?

    public var ready: Bool { status == .ready || status == .standby }
    /// QEMU's `busy` (the job's coroutine is not yielded); Spindle's copy threads: working,
    /// i.e. running or ready and not paused.
    public var busy: Bool { !paused && (status == .running || status == .ready) }
}

extension JobTable {
    /// Whether `id` names a block job (mirror, commit, stream): blockdev-create's jobs are
    /// jobs but not block jobs, as in QEMU.
    public func isBlockJob(_ id: String) -> Bool {
        guard let record = records[id] else { return false }
        return record.type != "create"
    }

    /// block-job-set-speed: the new limit (bytes per second, 0 = none) applies at the copy
    /// thread's next pace check; a job sleeping for its old limit is woken at once. QEMU's
    /// order: the job's state accepts the verb, then the value is checked.
    public mutating func setSpeed(_ id: String, to speed: Int64) throws(JobError) {
        guard let record = records[id] else { throw JobError.notFound }
        guard JobStateMachine.accepts(.setSpeed, in: record.status) else {
            throw JobError.verbRefused(id: id, status: record.status, verb: .setSpeed)
        }
        guard speed >= 0 else { throw JobError("Parameter 'speed' expects a non-negative value") }
        records[id]!.speed = UInt64(speed)
        records[id]!.wakeup.post()
    }

    /// query-block-jobs: every block job, oldest first.
    public func queryBlockJobs() -> [BlockJobInfo] {
        order.compactMap { id in
            guard let record = records[id], record.type != "create" else { return nil }
            return BlockJobInfo(id: record.id, type: record.type, status: record.status, offset: record.currentProgress,
                                length: record.totalProgress, speed: record.speed, paused: record.userPaused,
                                autoFinalize: record.autoFinalize, autoDismiss: record.autoDismiss, error: record.error)
        }
    }
}
