import BlockCommon
import BlockGraph
import ControlThread
import Glibc
import Monitor

/// blockdev-snapshot and blockdev-snapshot-sync (external qcow2 snapshots).
extension Daemon {
    public func blockdevSnapshot(node: String, overlay: String) async throws(QMPError) {
        do throws(BlockError) {
            try await graph.snapshot(node: NodeName(node), overlay: NodeName(overlay))
        } catch {
            throw QMPError(.genericError, error.message)
        }
        if let old = graph.nodes[NodeName(node)] { await reopenOldActiveLayerReadOnly(old) }
    }

    /// Creates the overlay (mode absolute-paths: a qcow2 image of the node's size naming the
    /// node's image, by its absolute path, and format as backing file) or takes the existing
    /// file, opens it as node `snapshot-node-name` without backing, then snapshots. If the
    /// snapshot fails the overlay node is closed again (a created file stays).
    public func blockdevSnapshotSync(_ request: SnapshotSyncRequest) async throws(QMPError) {
        let base = try snapshotSubject(request)
        let overlayName = NodeName(request.snapshotNodeName)
        guard graph.nodes[overlayName] == nil else {
            throw QMPError(.genericError, "New overlay node name already in use")
        }
        do throws(BlockError) {
            if !request.existing {
                let (backingFile, backingFormat) = try Self.backingReference(of: base)
                var qcow2 = BlockdevCreateQcow2(file: .inline(FileOptions(filename: request.snapshotFile)), size: base.length)
                qcow2.backingFile = backingFile
                qcow2.backingFormat = backingFormat
                try await graph.createImage(.file(filename: request.snapshotFile, size: 0, preallocation: .off), jobID: "snapshot-\(overlayName)")
                try await graph.createImage(.qcow2(qcow2), jobID: "snapshot-\(overlayName)")
            }
            var options = Qcow2Options(file: .inline(FileOptions(filename: request.snapshotFile)))
            options.backing = .none
            options.readOnly = base.readOnly
            try graph.openNode(BlockdevOptions(nodeName: overlayName, driver: .qcow2(options)))
            do throws(BlockError) {
                try await graph.snapshot(node: base.name, overlay: overlayName)
            } catch {
                try? graph.closeNode(overlayName)
                throw error
            }
        } catch {
            throw QMPError(.genericError, error.message)
        }
        await reopenOldActiveLayerReadOnly(base)
    }

    /// The node `device` (an export id, then a node name) or `node-name` names.
    private func snapshotSubject(_ request: SnapshotSyncRequest) throws(QMPError) -> BlockNode {
        if let device = request.device {
            if let export = export(id: device), let node = graph.servedNode(of: export.backend) { return node }
            if let node = graph.nodes[NodeName(device)] { return node }
            throw QMPError(.genericError, "Cannot find device='\(device)' nor node-name='\(request.nodeName ?? "")'")
        }
        let name = request.nodeName ?? ""
        guard let node = graph.nodes[NodeName(name)] else {
            throw QMPError(.genericError, "Cannot find device='' nor node-name='\(name)'")
        }
        return node
    }

    /// The node's image as a backing file: its absolute path and format (file: raw).
    private static func backingReference(of node: BlockNode) throws(BlockError) -> (String, String) {
        let format: String
        switch node.options.driver {
        case .qcow2: format = "qcow2"
        case .file: format = "raw"
        default:
            throw BlockError(errno: ENOTSUP, "Node '\(node.name)' is a \(node.driverName) node; snapshots need a qcow2 or file node")
        }
        let path = node.display.file
        guard let real = realpath(path, nil) else { return (path, format) }
        defer { free(real) }
        return (String(cString: real), format)
    }
}
