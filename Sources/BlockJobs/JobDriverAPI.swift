// The driver API of jobs: what a job's own body calls while it works.
//
// Who may call it: the job's body only (e.g. the mirror's copy thread), through the
// JobDriver handle `create` returned; never the monitor. Each call takes the job mutex
// itself and releases it before returning; sleeping and waiting at pause points happen
// with the mutex released.

import ControlThread

/// What the body should do next, decided at a pause point.
public enum JobCheckpoint: Sendable, Equatable {
    case proceed
    /// job-cancel was accepted: stop, undo, conclude(.cancelled).
    case cancel
    /// job-complete was accepted: finish (a mirror: final sync and pivot).
    case complete
}

/// How a job's body ended.
public enum JobOutcome: Sendable, Equatable {
    case success
    case failed(String)
    case cancelled
}

/// A job's body's handle on its own state.
public struct JobDriver: Sendable {
    let registry: JobRegistry
    public let id: String

    /// created -> running. false if the job was cancelled before it started (then the body
    /// must not run, and only calls conclude(.cancelled)).
    public func start() -> Bool {
        registry.locked { table -> Bool in
            guard let record = table.records[id], record.status == .created, !record.cancelRequested else { return false }
            try? table.transition(id, to: .running)
            return true
        }
    }

    /// A pause point: returns at once unless the job is paused, in which case it waits
    /// (status paused, or standby when ready) until resumed or cancelled.
    public func checkpoint() -> JobCheckpoint {
        while true {
            let step: JobCheckpoint? = registry.locked { table -> JobCheckpoint? in
                guard let record = table.records[id] else { return .cancel }
                if record.userPaused && !record.cancelRequested {
                    if record.status == .running { try? table.transition(id, to: .paused) }
                    if record.status == .ready { try? table.transition(id, to: .standby) }
                    return nil
                }
                if record.status == .paused { try? table.transition(id, to: .running) }
                if record.status == .standby { try? table.transition(id, to: .ready) }
                if record.cancelRequested { return .cancel }
                return record.completeRequested ? .complete : .proceed
            }
            if let step { return step }
            wakeup?.wait(nanoseconds: nil)
        }
    }

    /// Sleeps up to `nanoseconds` (a cancel, pause or complete wakes it early), then passes
    /// a pause point.
    public func sleep(nanoseconds: UInt64) -> JobCheckpoint {
        if nanoseconds > 0 { wakeup?.wait(nanoseconds: nanoseconds) }
        return checkpoint()
    }

    /// Progress so far, for query-jobs: `current` of `total` bytes (total may grow, as the
    /// guest dirties more data).
    public func setProgress(current: UInt64, total: UInt64) {
        registry.locked { table in
            table.records[id]?.currentProgress = current
            table.records[id]?.totalProgress = max(total, current)
        }
    }

    /// The speed limit now (bytes per second, 0 = none).
    public var speed: UInt64 { registry.locked { $0.records[id]?.speed ?? 0 } }

    /// running -> ready, with BLOCK_JOB_READY.
    public func setReady() {
        registry.locked { table in
            guard table.records[id]?.status == .running, (try? table.transition(id, to: .ready)) != nil else { return }
            table.events.append(.ready(table.records[id]!.eventInfo))
        }
    }

    /// The body's work is done: waiting -> pending. Returns true to commit (auto-finalize,
    /// or job-finalize came), false to abort (job-cancel came first). With auto-finalize=off
    /// this waits for one of the two.
    public func awaitFinalize() -> Bool {
        let entered: Bool = registry.locked { table in
            guard let record = table.records[id], !record.cancelRequested else { return false }
            guard (try? table.transition(id, to: .waiting)) != nil, (try? table.transition(id, to: .pending)) != nil else { return false }
            if !record.autoFinalize { table.events.append(.pending(id: id, type: record.type)) }
            return true
        }
        guard entered else { return false }
        while true {
            let decision: Bool? = registry.locked { table -> Bool? in
                guard let record = table.records[id] else { return false }
                if record.cancelRequested { return false }
                if record.autoFinalize || record.finalizeRequested { return true }
                return nil
            }
            if let decision { return decision }
            wakeup?.wait(nanoseconds: nil)
        }
    }

    /// Ends the job: BLOCK_JOB_COMPLETED (with the error if it failed) or BLOCK_JOB_CANCELLED,
    /// then concluded, then null and gone if auto-dismiss.
    public func conclude(_ outcome: JobOutcome) {
        registry.locked { table in
            guard var record = table.records[id] else { return }
            if record.status == .paused { try? table.transition(id, to: .running) }
            if record.status == .standby { try? table.transition(id, to: .ready) }
            switch outcome {
            case .success:
                if record.status != .pending {
                    _ = try? table.transition(id, to: .waiting)
                    _ = try? table.transition(id, to: .pending)
                }
                record = table.records[id]!
                table.events.append(.completed(record.eventInfo, error: nil))
            case .failed(let message):
                try? table.transition(id, to: .aborting)
                table.records[id]!.error = message
                table.events.append(.completed(table.records[id]!.eventInfo, error: message))
            case .cancelled:
                try? table.transition(id, to: .aborting)
                table.records[id]!.error = "Operation canceled"
                table.events.append(.cancelled(table.records[id]!.eventInfo))
            }
            try? table.transition(id, to: .concluded)
            if record.autoDismiss {
                try? table.transition(id, to: .null)
                table.remove(id)
            }
        }
    }

    private var wakeup: PosixSemaphore? { registry.locked { $0.records[id]?.wakeup } }
}

extension JobDriver {
    /// created -> null, gone: the job could not be set up after all (its command fails).
    public func discard() {
        registry.locked { table in
            guard table.records[id]?.status == .created else { return }
            try? table.transition(id, to: .null)
            table.remove(id)
        }
    }
}
