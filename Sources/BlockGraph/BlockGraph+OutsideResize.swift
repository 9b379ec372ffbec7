import BlockCommon
import BlockIO
import ControlThread
import Logging

/// A driver whose image can change size outside this process (rbd: `rbd resize` on another
/// host). It calls `onOutsideResize` on the control thread whenever it may have changed.
@ControlActor
protocol OutsideResizeSource: AnyObject {
    var onOutsideResize: (@ControlActor () -> Void)? { get set }
    /// The image's size as its store says now (a bounded wait), nil if it cannot tell.
    func currentImageSize() -> UInt64?
}

extension BlockGraph {
    /// Called when a node is opened: a resize made elsewhere reaches its guests.
    func watchOutsideResizes(of node: BlockNode) {
        guard let source = node.driver as? any OutsideResizeSource else { return }
        source.onOutsideResize = { [weak self, weak node] in
            guard let self, let node else { return }
            Task { @ControlActor in await self.outsideResize(of: node) }
        }
    }

    /// The image under `node` may have changed size elsewhere. If it did, the same path as
    /// block_resize minus the resize itself: drain the BlockBackends that see the node (its
    /// own and those of filters above it), take the new size, resume, and tell each device
    /// (a vhost-user config-change message to its frontend). A shrink is told the same way:
    /// it has happened already; requests past the new end fail with EIO. An inactive node
    /// is left alone: activation reads the size and tells the devices.
    func outsideResize(of node: BlockNode) async {
        guard nodes[node.name] === node, let source = node.driver as? any OutsideResizeSource else { return }
        let logger = Logger(label: "spindle.block")
        guard node.isActive else {
            logger.info("image changed elsewhere while the node is inactive; activation will read its size", metadata: ["node": "\(node.name)"])
            return
        }
        guard let size = source.currentImageSize(), size != node.length else { return }
        let oldSize = node.length
        let affected = usersOfNodeAndFiltersAbove(node)
        let changed = await withDrained(affected) { node.driver.refreshLength() }
        guard changed else { return }
        let (notified, unnotified) = tellDevicesResized(affected)
        logger.notice("image resized elsewhere: node takes the new size", metadata: [
            "node": "\(node.name)", "from": "\(oldSize)", "to": "\(node.length)",
            "told": "\(notified.sorted())", "not-told": "\(unnotified.sorted())"])
    }

    private func usersOfNodeAndFiltersAbove(_ node: BlockNode) -> [BlockBackend] {
        var seen: Set<NodeName> = [node.name]
        var pending = [node]
        var result: [BlockBackend] = []
        while let next = pending.popLast() {
            result += users(of: next.name)
            for parent in next.parents where !seen.contains(parent) {
                seen.insert(parent)
                if let above = nodes[parent] { pending.append(above) }
            }
        }
        return result
    }
}
