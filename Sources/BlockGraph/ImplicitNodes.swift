import BlockCommon
import ControlThread
import Glibc
import Logging

/// Names for implicit nodes: '#block', a counter, two random digits (QEMU's id_generate
/// shape). A user's node name must start with a letter, so these never collide with one;
/// the random digits keep scripts from guessing them instead of asking
/// query-named-block-nodes.
@ControlActor
enum ImplicitNodeName {
    private static var counter: UInt64 = 0

    static func next() -> NodeName {
        counter += 1
        let digits = UInt64.random(in: 0..<100)
        return NodeName("#block\(counter)\(digits < 10 ? "0" : "")\(digits)")
    }
}

/// The backing layers a qcow2 node opens from its image's header are nodes of the graph
/// (QEMU's implicit nodes): the driver opens them (Qcow2Driver+Backing.swift) and wraps each
/// in a BlockNode; the graph registers them when the node that opened them is added and
/// forgets them once they are closed. Each is owned by the layer above, its one user: it
/// closes when that layer closes or stops using it (Qcow2Driver.release), so a chain goes
/// with its top and a commit's or stream's dropped layers go with the switch.
extension BlockGraph {
    /// The implicit nodes below `node` (depth first) that the table does not hold yet.
    func unregisteredImplicitNodes(below node: BlockNode) -> [BlockNode] {
        var found: [BlockNode] = []
        var pending = node.children
        while let child = pending.popLast() {
            guard child.isImplicit, nodes[child.name] !== child, !found.contains(where: { $0 === child }) else { continue }
            found.append(child)
            pending += child.children
        }
        return found
    }

    /// Adds the implicit nodes `node` opened (after it was added itself).
    func registerImplicitNodes(below node: BlockNode) {
        for child in unregisteredImplicitNodes(below: node) {
            nodes[child.name] = child
            watchCorruption(of: child)
            Logger(label: "spindle.block").info("opened implicit node", metadata: ["node": "\(child.name)", "driver": "\(child.driverName)",
                                                           "file": "\(child.display.file)", "user": "\(node.name)"])
        }
    }

    /// Drops closed implicit nodes from the table (their owner closed them).
    func forgetClosedImplicitNodes() {
        for (name, node) in nodes where node.isImplicit && node.isClosed {
            nodes[name] = nil
            Logger(label: "spindle.block").info("closed implicit node", metadata: ["node": "\(name)"])
        }
    }

    /// QEMU's refusal of blockdev-del for a node the monitor did not add.
    func checkOwnedByMonitor(_ node: BlockNode) throws(BlockError) {
        guard node.isImplicit, node.userCount > 0 else { return }
        throw BlockError(errno: EPERM, "Node \(node.name) is not owned by the monitor")
    }
}

extension BlockGraph {
    /// An implicit node a BlockBackend leaves (say the export an active commit moved onto
    /// it) closes once nothing uses it.
    func closeImplicitIfUnused(_ name: NodeName) {
        guard let node = nodes[name], node.isImplicit, !node.isClosed, node.userCount == 0, node.parents.isEmpty, node.blocker == nil else { return }
        node.close()
        forgetClosedImplicitNodes()
    }
}

extension BlockGraph {
    /// The node a user added whose chain holds `node` (itself if it is one): what to name
    /// in errors about an implicit node.
    func monitorOwner(of node: BlockNode) -> BlockNode {
        var current = node
        var seen = 0
        while current.isImplicit, seen <= Qcow2ChainOpening.maximumDepth,
              let parent = current.parents.sorted(by: { $0.rawValue < $1.rawValue }).compactMap({ nodes[$0] }).first {
            current = parent
            seen += 1
        }
        return current
    }
}
