import BlockCommon

/// block-stream's arguments, checked by the monitor (QEMU 7.2's BlockStream shape).
public struct StreamOptions: Sendable, Equatable {
    public var jobID: String
    /// The node streamed into: the top of the chain (the active layer).
    public var device: NodeName
    /// `base`: the image (file name) the stream stops above; nil with `baseNode` nil: the
    /// whole chain is streamed.
    public var base: String?
    /// `base-node`: the same, as a node name.
    public var baseNode: NodeName?
    /// `backing-file`: the name the top's header gets for the base (default: its path).
    public var backingFile: String?
    /// Bytes per second, 0 = unlimited.
    public var speed: UInt64
    public var autoFinalize: Bool
    public var autoDismiss: Bool

    public init(jobID: String, device: NodeName, base: String? = nil, baseNode: NodeName? = nil, backingFile: String? = nil,
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
