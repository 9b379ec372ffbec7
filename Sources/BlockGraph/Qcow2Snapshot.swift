import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging

/// External snapshots (blockdev-snapshot): a qcow2 overlay opened without a backing node
/// becomes the active layer over a node, under drain. The node stays open, as the
/// overlay's backing child (read-only from now on: nothing but the overlay uses it).
extension BlockGraph {
    public func snapshot(node baseName: NodeName, overlay overlayName: NodeName) async throws(BlockError) {
        ControlActor.preconditionOnControlThread("snapshot")
        guard let base = nodes[baseName] else {
            throw BlockError(errno: ENOENT, "Cannot find device='\(baseName)' nor node-name='\(baseName)'")
        }
        guard let overlay = nodes[overlayName] else {
            throw BlockError(errno: ENOENT, "Cannot find device='\(overlayName)' nor node-name='\(overlayName)'")
        }
        let overlayOptions = try checkSnapshot(base: base, overlay: overlay)
        let moving = self.users(of: baseName)
        try await withDrained(moving) { () throws(BlockError) in
            // The overlay is opened again with the node as its backing: a qcow2 node's
            // backing layer is fixed when it opens (its data path holds it).
            var reopened = overlay.options
            var qcow2 = overlayOptions
            qcow2.backing = .node(baseName)
            reopened.driver = .qcow2(qcow2)
            try closeNode(overlayName)
            do throws(BlockError) {
                try openNode(reopened)
                try moveBackends(moving, from: baseName, to: overlayName)
            } catch {
                if nodes[overlayName] != nil { try? closeNode(overlayName) }
                if (try? openNode(overlay.options)) == nil {
                    Logger(label: "spindle.block").error("snapshot failed and overlay node '\(overlayName)' could not be opened again; add it again with blockdev-add")
                }
                throw error
            }
        }
        Logger(label: "spindle.block").notice("snapshot taken: overlay is the active layer", metadata: [
            "node": "\(baseName)", "overlay": "\(overlayName)", "moved": "\(moving.map(\.name).joined(separator: ","))"])
    }

    /// QEMU's checks (external_snapshot_prepare) and Spindle's own, before anything changes.
    private func checkSnapshot(base: BlockNode, overlay: BlockNode) throws(BlockError) -> Qcow2Options {
        for node in [base, overlay] {
            if let blocker = node.blocker { throw BlockError(errno: EBUSY, "Node '\(node.name)' is busy: \(blocker)") }
            guard node.isActive else {
                throw BlockError(errno: EPERM, "Node '\(node.name)' is inactive; activate it first (blockdev-set-active)")
            }
        }
        guard base !== overlay else {
            throw BlockError(errno: EINVAL, "Making '\(base.name)' a backing child of '\(overlay.name)' would create a cycle")
        }
        guard case .qcow2(let options) = overlay.options.driver, let driver = overlay.driver as? Qcow2Driver else {
            if overlay.driver is any FilterDriver { throw BlockError(errno: ENOTSUP, "Filters cannot be used as overlays") }
            throw BlockError(errno: ENOTSUP, "The overlay does not support backing images ('\(overlay.name)' is a \(overlay.driverName) node; snapshots need a qcow2 overlay)")
        }
        guard options.backing == .none, driver.backingDisplay == nil else {
            throw BlockError(errno: EEXIST, "The overlay already has a backing image ('\(overlay.name)' must be added with \"backing\": null)")
        }
        guard overlay.userCount == 0, overlay.parents.isEmpty else {
            throw BlockError(errno: EBUSY, "The overlay is already in use ('\(overlay.name)' has users; give a node nothing uses)")
        }
        guard base.parents.isEmpty else {
            let parents = base.parents.sorted { $0.rawValue < $1.rawValue }
            let names = parents.map(\.rawValue).joined(separator: "', '")
            if parents.contains(where: { nodes[$0]?.driver is any FilterDriver }) {
                throw BlockError(errno: ENOTSUP, "Node '\(base.name)' has filter node '\(names)' over it; snapshots under I/O limits or filters are not supported yet (lift the limits with block_set_io_throttle, or delete the filter, first)")
            }
            throw BlockError(errno: EBUSY, "Node '\(base.name)' is not the top of its chain ('\(names)' is built on it); snapshot '\(names)' instead")
        }
        guard base.length == overlay.length else {
            throw BlockError(errno: EINVAL, "The overlay '\(overlay.name)' is \(overlay.length) bytes and node '\(base.name)' \(base.length); a snapshot's overlay must have the node's size")
        }
        if !users(of: base.name).allSatisfy({ !$0.permissions.contains(.write) }) && overlay.readOnly {
            throw BlockError(errno: EROFS, "node '\(base.name)' is written by its users and the overlay '\(overlay.name)' is read-only; open the overlay writable")
        }
        return options
    }
}
