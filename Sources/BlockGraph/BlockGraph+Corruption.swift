import BlockCommon
import ControlThread

/// A node whose image was found corrupt: what QEMU's BLOCK_IMAGE_CORRUPTED carries.
public struct ImageCorruption: Sendable, Equatable {
    /// The BlockBackend (export) using the node, "" if none (QEMU's `device`).
    public var device: String
    public var node: NodeName
    public var message: String
    public var offset: UInt64?
    public var size: UInt64?
    /// Whether the image was marked corrupt (its writes fail from now on).
    public var fatal: Bool
}

extension BlockGraph {
    /// Called when a node is opened: its driver's corruption findings reach `onImageCorrupted`.
    func watchCorruption(of node: BlockNode) {
        guard let driver = node.driver as? Qcow2Driver else { return }
        driver.onCorruption = { [weak self, weak node] finding in
            guard let self, let node, self.nodes[node.name] === node else { return }
            let device = self.users(of: node.name).map(\.name).filter { !$0.hasPrefix("#") }.sorted().first ?? ""
            self.onImageCorrupted?(ImageCorruption(device: device, node: node.name, message: finding.message,
                                                   offset: finding.offset, size: finding.size, fatal: finding.fatal))
        }
    }
}
