import ControlThread

/// blockdev-mirror, query-jobs and the job-* verbs: argument checks (QEMU's order and
/// texts), then the target.
@ControlActor
struct QMPJobCommands {
    let target: any MonitorCommandTarget

    private enum SyncMode: String { case top, full, none, incremental, bitmap }
    private enum ErrorAction: String { case report, ignore, enospc, stop }
    private enum CopyMode: String { case background, writeBlocking = "write-blocking" }

    func blockdevMirror(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let jobID = try arguments.optionalString("job-id")
        let device = try arguments.requiredString("device")
        let targetNode = try arguments.requiredString("target")
        let replaces = try arguments.optionalString("replaces")
        guard let sync = try arguments.optionalEnum("sync", SyncMode.self) else { throw CommandArguments.missing("sync") }
        let speed = try arguments.optionalInt64("speed")
        let granularity = try arguments.optionalInt64("granularity")
        let bufferSize = try arguments.optionalInt64("buf-size")
        let onSourceError = try arguments.optionalEnum("on-source-error", ErrorAction.self)
        let onTargetError = try arguments.optionalEnum("on-target-error", ErrorAction.self)
        let filterNodeName = try arguments.optionalString("filter-node-name")
        let copyMode = try arguments.optionalEnum("copy-mode", CopyMode.self)
        let autoFinalize = try arguments.optionalBool("auto-finalize") ?? true
        let autoDismiss = try arguments.optionalBool("auto-dismiss") ?? true
        try arguments.finish()
        // sync=top: only what the source's top image holds (all of it without a backing chain).
        guard sync == .full || sync == .top else {
            throw QMPError("sync mode '\(sync.rawValue)' is not supported by Spindle; use sync=full")
        }
        try JobArgumentChecks.reportOnly("on-source-error", onSourceError?.rawValue)
        try JobArgumentChecks.reportOnly("on-target-error", onTargetError?.rawValue)
        if copyMode == .writeBlocking {
            throw QMPError("copy-mode=write-blocking is not supported by Spindle; use background (writes reach both images once the job is ready)")
        }
        if replaces != nil { throw QMPError("'replaces' is not supported by Spindle; the mirrored node itself is replaced") }
        if filterNodeName != nil { throw QMPError("'filter-node-name' is not supported by Spindle; its mirror filter has no node name") }
        let bytesPerSecond = try JobArgumentChecks.speed(speed)
        if let granularity {
            guard granularity >= 512, granularity <= 64 << 20 else {
                throw QMPError("Parameter 'granularity' expects a value in range [512B, 64MB]")
            }
            guard granularity & (granularity - 1) == 0 else { throw QMPError("Parameter 'granularity' expects a power of 2") }
        }
        if let bufferSize, bufferSize < 0 { throw QMPError("Invalid parameter 'buf-size'") }
        var request = MirrorRequest(jobID: jobID ?? "", device: device, target: targetNode, speed: bytesPerSecond,
                                    granularity: granularity.map(UInt64.init), bufferSize: bufferSize.flatMap { $0 > 0 ? UInt64($0) : nil },
                                    autoFinalize: autoFinalize, autoDismiss: autoDismiss)
        request.syncTop = sync == .top
        try await target.blockdevMirror(request)
        return .emptyObject
    }

    func queryJobs(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        try arguments.finish()
        return .array(target.queryJobs().map { info in
            var object = JSONObject([
                "id": .string(info.id),
                "type": .string(info.type),
                "status": .string(info.status),
                "current-progress": .integer(info.currentProgress),
                "total-progress": .integer(info.totalProgress),
            ])
            if let error = info.error { object["error"] = .string(error) }
            return .object(object)
        })
    }

    func job(_ command: JobCommand, _ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let id = try arguments.requiredString("id")
        try arguments.finish()
        try target.jobCommand(command, id: id)
        return .emptyObject
    }
}
