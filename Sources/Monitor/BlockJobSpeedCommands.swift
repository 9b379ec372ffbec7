import ControlThread

/// One entry of query-block-jobs (QEMU 7.2's BlockJobInfo).
public struct BlockJobQueryInfo: Sendable, Equatable {
    public var id: String
    public var type: String
    public var status: String
    public var offset: UInt64
    public var length: UInt64
    public var speed: UInt64
    public var busy: Bool
    public var paused: Bool
    public var ready: Bool
    public var autoFinalize: Bool
    public var autoDismiss: Bool
    public var error: String?
    public init(id: String, type: String, status: String, offset: UInt64, length: UInt64, speed: UInt64, busy: Bool, paused: Bool,
                ready: Bool, autoFinalize: Bool, autoDismiss: Bool, error: String?) {
        self.id = id
        self.type = type
        self.status = status
        self.offset = offset
        self.length = length
        self.speed = speed
        self.busy = busy
        self.paused = paused
        self.ready = ready
        self.autoFinalize = autoFinalize
        self.autoDismiss = autoDismiss
        self.error = error
    }
}

/// block-job-set-speed and query-block-jobs (QEMU 7.2's shapes): `device` is the job id.
@ControlActor
struct BlockJobSpeedCommands {
    let target: any MonitorCommandTarget

    func blockJobSetSpeed(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let device = try arguments.requiredString("device")
        let speed = try arguments.requiredInt64("speed")
        try arguments.finish()
        // The sign is checked by the target after the job's state (QEMU's order).
        try target.blockJobSetSpeed(device: device, speed: speed)
        return .emptyObject
    }

    func queryBlockJobs(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        try arguments.finish()
        return .array(target.queryBlockJobs().map { info in
            var object = JSONObject([
                "type": .string(info.type),
                "device": .string(info.id),
                "len": .integer(info.length),
                "offset": .integer(info.offset),
                "busy": .bool(info.busy),
                "paused": .bool(info.paused),
                "speed": .integer(info.speed),
                "io-status": .string("ok"),
                "ready": .bool(info.ready),
                "status": .string(info.status),
                "auto-finalize": .bool(info.autoFinalize),
                "auto-dismiss": .bool(info.autoDismiss),
            ])
            if let error = info.error { object["error"] = .string(error) }
            return .object(object)
        })
    }
}

extension MonitorCommandTarget {
    /// Default: targets without jobs have none to find.
    public func blockJobSetSpeed(device: String, speed: Int64) throws(QMPError) {
        throw QMPError(.deviceNotActive, "Block job '\(device)' not found")
    }

    /// Default: no block jobs.
    public func queryBlockJobs() -> [BlockJobQueryInfo] { [] }
}
