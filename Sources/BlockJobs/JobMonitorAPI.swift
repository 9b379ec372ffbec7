// The monitor API of jobs: what QMP commands (job-pause, job-cancel, query-jobs, ...) call.
//
// Who may call it: the monitor, i.e. the control thread, or any thread in tests; never a
// job's own body (that uses JobDriverAPI.swift). The caller takes the job mutex with
// `withJobLock` and calls these on the locked table, so that finding a job and acting on it
// see one consistent state: no job can change state or vanish between the two.
// Nothing here blocks: requests are recorded and the job's body is woken to act on them.

/// What query-jobs shows of a job.
public struct JobInfo: Sendable, Equatable {
    public let id: String
    public let type: String
    public let status: JobStatus
    public let currentProgress: UInt64
    public let totalProgress: UInt64
    public let error: String?
}

/// Options a job is created with.
public struct JobOptions: Sendable {
    public var autoFinalize = true
    public var autoDismiss = true
    /// Bytes per second; 0 is unlimited.
    public var speed: UInt64 = 0
    public init(autoFinalize: Bool = true, autoDismiss: Bool = true, speed: UInt64 = 0) {
        self.autoFinalize = autoFinalize
        self.autoDismiss = autoDismiss
        self.speed = speed
    }
}

extension JobRegistry {
    /// Holds the job mutex while `body` looks jobs up and acts on them.
    public func withJobLock<R: Sendable, E: Error>(_ body: (inout JobTable) throws(E) -> R) throws(E) -> R {
        try locked(body)
    }
}

extension JobTable {
    /// Registers a new job in state `created` and returns the handle its body drives it by.
    public mutating func create(id: String, type: String, options: JobOptions,
                                registry: JobRegistry) throws(JobError) -> JobDriver {
        guard Self.isWellFormed(id) else { throw JobError("Invalid job ID '\(id)'") }
        guard records[id] == nil else { throw JobError("Job ID '\(id)' already in use") }
        records[id] = JobRecord(id: id, type: type, autoFinalize: options.autoFinalize,
                                autoDismiss: options.autoDismiss, speed: options.speed)
        order.append(id)
        events.append(.statusChange(id: id, status: .created))
        return JobDriver(registry: registry, id: id)
    }

    /// QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'.
    static func isWellFormed(_ id: String) -> Bool {
        guard let first = id.unicodeScalars.first, first.properties.isAlphabetic, first.isASCII else { return false }
        return id.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-._".unicodeScalars.contains($0)) }
    }

    /// query-jobs: every job, oldest first.
    public func query() -> [JobInfo] {
        order.compactMap { records[$0]?.info }
    }

    /// The job's current state ("Job not found" if there is none).
    public func find(_ id: String) throws(JobError) -> JobInfo {
        guard let record = records[id] else { throw JobError.notFound }
        return record.info
    }

    /// Whether a job exists with this id.
    public func contains(_ id: String) -> Bool { records[id] != nil }

    /// job-pause: the body stops at its next pause point (status paused, or standby if ready).
    public mutating func pause(_ id: String) throws(JobError) {
        try apply(.pause, to: id)
        guard !records[id]!.userPaused else { throw JobError("Job is already paused") }
        records[id]!.userPaused = true
        records[id]!.wakeup.post()
    }

    /// job-resume.
    public mutating func resume(_ id: String) throws(JobError) {
        try apply(.resume, to: id)
        guard records[id]!.userPaused else { throw JobError("Can't resume a job that was not paused") }
        records[id]!.userPaused = false
        records[id]!.wakeup.post()
    }

    /// job-cancel: before READY the job ends leaving its source as it was; once READY a
    /// mirror ends without switching to its target. Either way BLOCK_JOB_CANCELLED.
    public mutating func cancel(_ id: String) throws(JobError) {
        try apply(.cancel, to: id)
        records[id]!.cancelRequested = true
        records[id]!.wakeup.post()
    }

    /// job-complete: a READY job finishes (a mirror pivots to its target).
    public mutating func complete(_ id: String) throws(JobError) {
        try apply(.complete, to: id)
        guard !records[id]!.cancelRequested else { throw JobError("The active block job '\(id)' cannot be completed") }
        records[id]!.completeRequested = true
        records[id]!.wakeup.post()
    }

    /// job-finalize: a PENDING job (auto-finalize=off) commits its result.
    public mutating func finalize(_ id: String) throws(JobError) {
        try apply(.finalize, to: id)
        records[id]!.finalizeRequested = true
        records[id]!.wakeup.post()
    }

    /// job-dismiss: a CONCLUDED job (auto-dismiss=off) leaves the list.
    public mutating func dismiss(_ id: String) throws(JobError) {
        try apply(.dismiss, to: id)
        try transition(id, to: .null)
        remove(id)
    }

    /// Finds the job and checks that its state accepts `verb` (QEMU's job_apply_verb).
    private func apply(_ verb: JobVerb, to id: String) throws(JobError) {
        guard let record = records[id] else { throw JobError.notFound }
        guard JobStateMachine.accepts(verb, in: record.status) else {
            throw JobError.verbRefused(id: id, status: record.status, verb: verb)
        }
    }
}

extension JobRecord {
    /// What query-jobs shows of this job.
    fileprivate var info: JobInfo {
        JobInfo(id: id, type: type, status: status, currentProgress: currentProgress,
                totalProgress: totalProgress, error: error)
    }
}
