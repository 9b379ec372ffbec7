/// What a job tells monitor clients. Queued under the job mutex in the order things happen;
/// delivered by whoever drains the queue (the daemon, on the control thread).
public enum JobEvent: Sendable, Equatable {
    /// JOB_STATUS_CHANGE.
    case statusChange(id: String, status: JobStatus)
    /// BLOCK_JOB_READY.
    case ready(BlockJobEventInfo)
    /// BLOCK_JOB_PENDING (only for jobs with auto-finalize=off).
    case pending(id: String, type: String)
    /// BLOCK_JOB_COMPLETED (error set when the job failed).
    case completed(BlockJobEventInfo, error: String?)
    /// BLOCK_JOB_CANCELLED.
    case cancelled(BlockJobEventInfo)
}

/// The members QEMU's block job events carry: device is the job id.
public struct BlockJobEventInfo: Sendable, Equatable {
    public let id: String
    public let type: String
    public let length: UInt64
    public let offset: UInt64
    public let speed: UInt64
}
