import BlockCommon

/// blockdev-mirror's arguments, checked (sync full, or top: `topOnly`).
public struct MirrorOptions: Sendable {
    public var jobID: String
    public var source: NodeName
    public var target: NodeName
    /// Bytes per second, 0 = unlimited.
    public var speed: UInt64
    /// Bytes tracked per dirty bit (a power of two, 512 B to 64 MiB).
    public var granularity: UInt64
    /// The most the job copies at once.
    public var bufferSize: UInt64
    public var autoFinalize: Bool
    public var autoDismiss: Bool
    /// sync=top: only the ranges the source's own image holds are copied at first (the
    /// target must back onto the source's backing chain); guest writes are tracked as ever.
    public var topOnly = false

    public static let defaultGranularity: UInt64 = 64 << 10
    public static let defaultBufferSize: UInt64 = 1 << 20

    public init(jobID: String, source: NodeName, target: NodeName, speed: UInt64 = 0,
                granularity: UInt64 = MirrorOptions.defaultGranularity, bufferSize: UInt64 = MirrorOptions.defaultBufferSize,
                autoFinalize: Bool = true, autoDismiss: Bool = true) {
        self.jobID = jobID
        self.source = source
        self.target = target
        self.speed = speed
        self.granularity = granularity
        self.bufferSize = bufferSize
        self.autoFinalize = autoFinalize
        self.autoDismiss = autoDismiss
    }
}
