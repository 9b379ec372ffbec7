import BlockCommon
import ControlThread

/// block-stream's arguments after the monitor checked them.
public struct StreamRequest: Sendable, Equatable {
    /// QEMU defaults the job id to the device's name, which a node name is not: an absent
    /// job-id gives "Invalid job ID ''" (as blockdev-mirror's).
    public var jobID: String
    public var device: String
    public var base: String?
    public var baseNode: String?
    public var backingFile: String?
    public var speed: UInt64
    public var autoFinalize: Bool
    public var autoDismiss: Bool
    /// `bottom`: the lowest layer (a node name) whose data is pulled; the base is the layer
    /// below it. Exclusive with `base` and `base-node`.
    public var bottom: String?

    public init(jobID: String, device: String, base: String? = nil, baseNode: String? = nil, backingFile: String? = nil,
                speed: UInt64 = 0, autoFinalize: Bool = true, autoDismiss: Bool = true) {
        self.jobID = jobID
        self.device = device
        self.base = base
        self.baseNode = baseNode
        self.backingFile = backingFile
        self.speed = speed
        self.autoFinalize = autoFinalize
        self.autoDismiss = autoDismiss
    }
}

/// block-stream: QEMU 7.2's arguments (qapi/block-core.json BlockStream), their checks, then
/// the target.
@ControlActor
struct StreamCommands {
    let target: any MonitorCommandTarget

    private enum ErrorAction: String { case report, ignore, enospc, stop, auto }

    func blockStream(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let jobID = try arguments.optionalString("job-id")
        let device = try arguments.requiredString("device")
        let base = try arguments.optionalString("base")
        let baseNode = try arguments.optionalString("base-node")
        let backingFile = try arguments.optionalString("backing-file")
        let bottom = try arguments.optionalString("bottom")
        let speed = try arguments.optionalInt64("speed")
        let onError = try arguments.optionalEnum("on-error", ErrorAction.self)
        let filterNodeName = try arguments.optionalString("filter-node-name")
        let autoFinalize = try arguments.optionalBool("auto-finalize") ?? true
        let autoDismiss = try arguments.optionalBool("auto-dismiss") ?? true
        try arguments.finish()
        try JobArgumentChecks.reportOnly("on-error", onError?.rawValue)
        if filterNodeName != nil {
            throw QMPError("'filter-node-name' is not supported by Spindle; its stream job puts no filter node over the image")
        }
        let bytesPerSecond = try JobArgumentChecks.speed(speed)
        // QEMU's order and texts (blockdev.c qmp_block_stream).
        if base != nil && baseNode != nil { throw QMPError("'base' and 'base-node' cannot be specified at the same time") }
        if base != nil && bottom != nil { throw QMPError("'base' and 'bottom' cannot be specified at the same time") }
        if bottom != nil && baseNode != nil { throw QMPError("'bottom' and 'base-node' cannot be specified at the same time") }
        var request = StreamRequest(
            jobID: jobID ?? "", device: device, base: base, baseNode: baseNode, backingFile: backingFile,
            speed: bytesPerSecond, autoFinalize: autoFinalize, autoDismiss: autoDismiss)
        request.bottom = bottom
        try await target.blockStream(request)
        return .emptyObject
    }
}

extension MonitorCommandTarget {
    /// Default: targets without a block graph refuse block-stream.
    public func blockStream(_ request: StreamRequest) async throws(QMPError) {
        throw QMPError("block-stream is not supported here")
    }
}
