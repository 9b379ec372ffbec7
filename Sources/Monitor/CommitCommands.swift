import ControlThread

/// block-commit's arguments after the monitor checked their types (QEMU 7.2's BlockCommit).
public struct CommitRequest: Sendable, Equatable {
    /// The job id; absent gives "Invalid job ID ''" as blockdev-mirror (see MirrorRequest).
    public var jobID: String
    /// The active layer: an export id or a node name.
    public var device: String
    public var topNode: String?
    public var top: String?
    public var baseNode: String?
    public var base: String?
    public var backingFile: String?
    public var speed: UInt64
    public var autoFinalize: Bool
    public var autoDismiss: Bool

    public init(jobID: String, device: String, topNode: String? = nil, top: String? = nil, baseNode: String? = nil,
                base: String? = nil, backingFile: String? = nil, speed: UInt64 = 0, autoFinalize: Bool = true, autoDismiss: Bool = true) {
        self.jobID = jobID
        self.device = device
        self.topNode = topNode
        self.top = top
        self.baseNode = baseNode
        self.base = base
        self.backingFile = backingFile
        self.speed = speed
        self.autoFinalize = autoFinalize
        self.autoDismiss = autoDismiss
    }
}

/// block-commit and block-job-complete (QEMU's older name for job-complete): argument
/// checks in QEMU's order and texts, then the target.
@ControlActor
struct CommitCommands {
    let target: any MonitorCommandTarget

    private enum ErrorAction: String { case report, ignore, enospc, stop }

    func blockCommit(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let jobID = try arguments.optionalString("job-id")
        let device = try arguments.requiredString("device")
        let baseNode = try arguments.optionalString("base-node")
        let base = try arguments.optionalString("base")
        let topNode = try arguments.optionalString("top-node")
        let top = try arguments.optionalString("top")
        let backingFile = try arguments.optionalString("backing-file")
        let speed = try arguments.optionalInt64("speed")
        let onError = try arguments.optionalEnum("on-error", ErrorAction.self)
        let filterNodeName = try arguments.optionalString("filter-node-name")
        let autoFinalize = try arguments.optionalBool("auto-finalize") ?? true
        let autoDismiss = try arguments.optionalBool("auto-dismiss") ?? true
        try arguments.finish()
        try JobArgumentChecks.reportOnly("on-error", onError?.rawValue)
        if filterNodeName != nil { throw QMPError("'filter-node-name' is not supported by Spindle; its commit filter has no node name") }
        let bytesPerSecond = try JobArgumentChecks.speed(speed)
        if topNode != nil && top != nil { throw QMPError("'top-node' and 'top' are mutually exclusive") }
        if baseNode != nil && base != nil { throw QMPError("'base-node' and 'base' are mutually exclusive") }
        try await target.blockCommit(CommitRequest(
            jobID: jobID ?? "", device: device, topNode: topNode, top: top, baseNode: baseNode, base: base,
            backingFile: backingFile, speed: bytesPerSecond, autoFinalize: autoFinalize, autoDismiss: autoDismiss))
        return .emptyObject
    }

    /// block-job-complete: `device` is the job id.
    func blockJobComplete(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let id = try arguments.requiredString("device")
        try arguments.finish()
        try target.jobCommand(.complete, id: id)
        return .emptyObject
    }
}

extension MonitorCommandTarget {
    /// block-commit (targets without jobs refuse it).
    public func blockCommit(_ request: CommitRequest) async throws(QMPError) {
        throw QMPError("block-commit is not supported here")
    }
}
