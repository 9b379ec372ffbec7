/// blockdev-mirror's arguments after the monitor checked their types and ranges.
public struct MirrorRequest: Sendable, Equatable {
    /// The job id; QEMU defaults it to the device's name, which a node name is not, so an
    /// absent job-id gives "Invalid job ID ''" as in qsd.
    public var jobID: String
    public var device: String
    public var target: String
    public var speed: UInt64
    public var granularity: UInt64?
    public var bufferSize: UInt64?
    public var autoFinalize: Bool
    public var autoDismiss: Bool
    /// sync=top: copy only what the source's own (top) image holds.
    public var syncTop = false

    public init(jobID: String, device: String, target: String, speed: UInt64 = 0, granularity: UInt64? = nil,
                bufferSize: UInt64? = nil, autoFinalize: Bool = true, autoDismiss: Bool = true) {
        self.jobID = jobID
        self.device = device
        self.target = target
        self.speed = speed
        self.granularity = granularity
        self.bufferSize = bufferSize
        self.autoFinalize = autoFinalize
        self.autoDismiss = autoDismiss
    }
}

/// The job-* commands that act on one job.
public enum JobCommand: String, Sendable, CaseIterable {
    case pause = "job-pause"
    case resume = "job-resume"
    case cancel = "job-cancel"
    case complete = "job-complete"
    case finalize = "job-finalize"
    case dismiss = "job-dismiss"
}

/// One entry of query-jobs (QEMU's JobInfo).
public struct JobQueryInfo: Sendable, Equatable {
    public var id: String
    public var type: String
    public var status: String
    public var currentProgress: UInt64
    public var totalProgress: UInt64
    public var error: String?
    public init(id: String, type: String, status: String, currentProgress: UInt64, totalProgress: UInt64, error: String?) {
        self.id = id
        self.type = type
        self.status = status
        self.currentProgress = currentProgress
        self.totalProgress = totalProgress
        self.error = error
    }
}
