import BlockCommon
import BlockGraph

/// block-commit's arguments, checked by the monitor; the device resolved to its node.
public struct CommitOptions: Sendable {
    public var jobID: String
    /// The active layer: the node the device (an export or a node name) names.
    public var device: NodeName
    public var top: CommitLayerChoice
    public var base: CommitLayerChoice
    /// `backing-file`: what the image above top is to name as its backing file (intermediate
    /// commits only; refused for an active commit, as QEMU).
    public var backingFile: String?
    /// Bytes per second, 0 = unlimited.
    public var speed: UInt64
    public var autoFinalize: Bool
    public var autoDismiss: Bool

    public init(jobID: String, device: NodeName, top: CommitLayerChoice = .unnamed, base: CommitLayerChoice = .unnamed,
                backingFile: String? = nil, speed: UInt64 = 0, autoFinalize: Bool = true, autoDismiss: Bool = true) {
        self.jobID = jobID
        self.device = device
        self.top = top
        self.base = base
        self.backingFile = backingFile
        self.speed = speed
        self.autoFinalize = autoFinalize
        self.autoDismiss = autoDismiss
    }
}
