import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// Swapping a qcow2 node's backing child in place (GS, under drain of every BlockBackend
/// reading through the node; its header names the new child already): an intermediate
/// commit's switch onto base (BlockGraph+CommitSwitch.swift), and the end of a stream down
/// to a layer the top opened from its header, which keeps its node as in QEMU.
extension BlockGraph {
    /// What a qcow2 node reads `base` through, and the format its header names for it.
    static func backingPath(to base: BlockNode, for overlay: BlockNode) throws(BlockError) -> (io: Qcow2Backing, format: String) {
        if let qcow2 = base.io as? Qcow2IO { return (.qcow2(qcow2), "qcow2") }
        if let file = base.io as? FileIO, case .file(let options) = base.options.driver, !options.direct { return (.raw(file), "raw") }
        throw BlockError(errno: ENOTSUP, "node '\(base.name)' (driver \(base.driverName)) cannot back qcow2 node '\(overlay.name)'")
    }

    /// `overlay`'s backing child becomes `base` instead of `old`: base gains the overlay as a
    /// user (with the locks a backing child needs), old loses it, the data path reads base
    /// from the next request on; then an implicit old closes, with the implicit layers down
    /// to base (QEMU drops them). If the locks cannot be taken nothing changes.
    func replaceBackingChild(of overlay: BlockNode, from old: BlockNode, to base: BlockNode) throws(BlockError) {
        guard let driver = overlay.driver as? Qcow2Driver, let image = overlay.io as? Qcow2IO else {
            throw BlockError(errno: EINVAL, "node '\(overlay.name)' is not a qcow2 node")
        }
        let next = try Self.backingPath(to: base, for: overlay)
        try base.setUser(driver, permissions: [])
        driver.backing = .node(base)
        do {
            try overlay.updateLocks()
        } catch {
            driver.backing = .node(old)
            base.removeUser(driver)
            throw error
        }
        old.parents.remove(overlay.name)
        base.parents.insert(overlay.name)
        image.replaceBacking(next.io)
        driver.backingDisplay = Qcow2BackingDisplay(filename: base.display.file, format: next.format,
                                                    depth: 1 + ((base.driver as? Qcow2Driver)?.backingDisplay?.depth ?? 0))
        Qcow2Driver.release(.node(old), user: driver)
        forgetClosedImplicitNodes()
    }

    /// The end of a stream down to a layer the top opened from its header (its header
    /// names that layer now): the top's backing child becomes that layer's node in place,
    /// instead of the top being opened again. Returns false when the base is not such a
    /// layer (the caller opens the top again).
    func keepImplicitBase(of top: BlockNode, plan: StreamPlan) throws(BlockError) -> Bool {
        guard let name = plan.base?.implicitNode, let base = nodes[name], let driver = top.driver as? Qcow2Driver,
              case .node(let current)? = driver.backing else { return false }
        if current !== base { try replaceBackingChild(of: top, from: current, to: base) }
        return true
    }
}
