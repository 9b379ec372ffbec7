import BlockCommon
import BlockJobs
import ControlThread
import Monitor

/// The job registry's doorbell: delivers the jobs' events on the control thread after each
/// change, to the daemon that owns the registry (set once the daemon exists).
@ControlActor
final class JobEventDoorbell {
    weak var daemon: Daemon?

    nonisolated var ring: @Sendable () -> Void {
        { Task { @ControlActor in self.daemon?.deliverJobEvents() } }
    }
}

/// Block jobs through QMP: blockdev-mirror, the job-* verbs, query-jobs, and delivery of the
/// jobs' events. Every monitor-side job access holds the job mutex across the look-up and
/// the action (JobRegistry.withJobLock).
extension Daemon {
    public func blockdevMirror(_ request: MirrorRequest) async throws(QMPError) {
        var options = MirrorOptions(jobID: request.jobID, source: NodeName(request.device), target: NodeName(request.target),
                                    speed: request.speed, granularity: request.granularity ?? MirrorOptions.defaultGranularity,
                                    bufferSize: request.bufferSize ?? MirrorOptions.defaultBufferSize,
                                    autoFinalize: request.autoFinalize, autoDismiss: request.autoDismiss)
        options.topOnly = request.syncTop
        // Another process may own an inactive node's image: no job reads or writes it.
        for (role, name) in [("source", options.source), ("target", options.target)] where graph.nodes[name]?.isActive == false {
            throw QMPError(.genericError, "Inactive node '\(name)' cannot be a mirror \(role); activate it first (blockdev-set-active)")
        }
        try refuseRbdMirror(source: options.source, target: options.target)
        do throws(JobError) {
            try await MirrorJob.start(options, graph: graph, registry: jobs)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    public func jobCommand(_ command: JobCommand, id: String) throws(QMPError) {
        do throws(JobError) {
            try jobs.withJobLock { table throws(JobError) in
                switch command {
                case .pause: try table.pause(id)
                case .resume: try table.resume(id)
                case .cancel: try table.cancel(id)
                case .complete: try table.complete(id)
                case .finalize: try table.finalize(id)
                case .dismiss: try table.dismiss(id)
                }
            }
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    public func queryJobs() -> [JobQueryInfo] {
        jobs.withJobLock { $0.query() }.map {
            JobQueryInfo(id: $0.id, type: $0.type, status: $0.status.rawValue, currentProgress: $0.currentProgress,
                         totalProgress: $0.totalProgress, error: $0.error)
        }
    }

    /// Sends the jobs' queued events, in the order they happened, to every monitor client.
    func deliverJobEvents() {
        for event in jobs.takeEvents() {
            switch event {
            case .statusChange(let id, let status):
                emit(event: "JOB_STATUS_CHANGE", data: JSONObject(["status": .string(status.rawValue), "id": .string(id)]))
            case .ready(let info):
                emit(event: "BLOCK_JOB_READY", data: Self.blockJobData(info, error: nil))
            case .pending(let id, let type):
                emit(event: "BLOCK_JOB_PENDING", data: JSONObject(["type": .string(type), "id": .string(id)]))
            case .completed(let info, _) where info.type == "create":
                continue  // blockdev-create's job is not a block job: QEMU sends JOB_STATUS_CHANGE only
            case .completed(let info, let error):
                emit(event: "BLOCK_JOB_COMPLETED", data: Self.blockJobData(info, error: error))
                recordGraphChanges()  // a mirror's pivot moved an export (state file)
            case .cancelled(let info) where info.type == "create":
                continue
            case .cancelled(let info):
                emit(event: "BLOCK_JOB_CANCELLED", data: Self.blockJobData(info, error: nil))
            }
        }
    }

    private static func blockJobData(_ info: BlockJobEventInfo, error: String?) -> JSONObject {
        var data = JSONObject([
            "device": .string(info.id), "len": .integer(info.length), "offset": .integer(info.offset),
            "speed": .integer(info.speed), "type": .string(info.type),
        ])
        if let error { data["error"] = .string(error) }
        return data
    }

    /// At shutdown: every job is asked to cancel (its guest stays on its source), and given a
    /// few seconds to undo its graph changes and release its nodes before they are closed.
    func cancelAllJobs() async {
        let active = jobs.withJobLock { table in
            table.query().filter { $0.status != .concluded }.map { job in
                try? table.cancel(job.id)
                return job.id
            }
        }
        guard !active.isEmpty else { return }
        logger.notice("cancelling block jobs before shutdown", metadata: ["jobs": "\(active.joined(separator: ","))"])
        for _ in 0..<100 {
            let running = jobs.withJobLock { table in table.query().contains { $0.status != .concluded } }
            if !running { return }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        logger.warning("block jobs still running at shutdown; their nodes stay open until exit")
    }
}
