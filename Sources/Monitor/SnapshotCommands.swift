import BlockCommon
import ControlThread

/// blockdev-snapshot-sync's arguments after the monitor checked them.
public struct SnapshotSyncRequest: Sendable, Equatable {
    /// `device` (an export id or a node name) or `node-name`: the node to snapshot.
    public var device: String?
    public var nodeName: String?
    public var snapshotFile: String
    public var snapshotNodeName: String
    /// `existing`: open snapshot-file as it is; else (absolute-paths) create it first, with
    /// the node's image as its backing file.
    public var existing: Bool

    public init(device: String?, nodeName: String?, snapshotFile: String, snapshotNodeName: String, existing: Bool) {
        self.device = device
        self.nodeName = nodeName
        self.snapshotFile = snapshotFile
        self.snapshotNodeName = snapshotNodeName
        self.existing = existing
    }
}

/// blockdev-snapshot and blockdev-snapshot-sync: QEMU's arguments and texts, then the target.
@ControlActor
struct SnapshotCommands {
    let target: any MonitorCommandTarget

    private enum Mode: String {
        case existing
        case absolutePaths = "absolute-paths"
    }

    func blockdevSnapshot(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let node = try arguments.requiredString("node")
        let overlay = try arguments.requiredString("overlay")
        try arguments.finish()
        try await target.blockdevSnapshot(node: node, overlay: overlay)
        return .emptyObject
    }

    func blockdevSnapshotSync(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let device = try arguments.optionalString("device")
        let nodeName = try arguments.optionalString("node-name")
        let snapshotFile = try arguments.requiredString("snapshot-file")
        let snapshotNodeName = try arguments.optionalString("snapshot-node-name")
        let format = try arguments.optionalString("format") ?? "qcow2"
        let mode = try arguments.optionalEnum("mode", Mode.self) ?? .absolutePaths
        try arguments.finish()
        guard device != nil || nodeName != nil else {
            throw QMPError("Cannot find device= nor node-name=")
        }
        guard format == "qcow2" else {
            throw QMPError("format '\(format)' is not supported for snapshots by Spindle; use qcow2")
        }
        guard let snapshotNodeName else {
            throw QMPError("New overlay node name missing (Spindle needs snapshot-node-name)")
        }
        try await target.blockdevSnapshotSync(SnapshotSyncRequest(
            device: device, nodeName: nodeName, snapshotFile: snapshotFile, snapshotNodeName: snapshotNodeName,
            existing: mode == .existing))
        return .emptyObject
    }
}

extension MonitorCommandTarget {
    /// Default: targets without a block graph refuse snapshots.
    public func blockdevSnapshot(node: String, overlay: String) async throws(QMPError) {
        throw QMPError("blockdev-snapshot is not supported here")
    }

    public func blockdevSnapshotSync(_ request: SnapshotSyncRequest) async throws(QMPError) {
        throw QMPError("blockdev-snapshot-sync is not supported here")
    }

    /// Default: targets without jobs refuse blockdev-create.
    public func blockdevCreate(jobID: String, options: BlockdevCreateOptions) throws(QMPError) {
        throw QMPError("blockdev-create is not supported here")
    }
}
