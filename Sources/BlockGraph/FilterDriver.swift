import BlockCommon
import ControlThread
import Glibc

/// A filter over one child node (x-delay, throttle): a user of its child for as long as it
/// exists, passing its own users' permissions down, so the child's locks follow them and the
/// child cannot be deleted under it. Sized, flushed and shown as its child.
@ControlActor
protocol FilterDriver: BlockDriver {
    var child: BlockNode { get }
}

@ControlActor
extension FilterDriver {
    var children: [BlockNode] { [child] }

    func applyPermissions(_ users: [BlockPermissions]) throws(BlockError) {
        try child.setUser(self, permissions: users.reduce([]) { $0.union($1) })
    }

    /// The child's size is the filter's: resizing the filter resizes the child.
    func resize(to size: UInt64) throws(BlockError) { try child.resize(to: size) }

    func close() { child.removeUser(self) }

    // The child is flushed and re-read as a node of its own (children go with their parent).
    func flushToDisk() throws(BlockError) {}
    func refreshLength() -> Bool { false }

    var display: BlockNodeDisplay { child.display }

    /// The node a filter `node` is opened over: it must exist and not be busy.
    static func filteredChild(_ name: NodeName, of node: NodeName, in nodes: [NodeName: BlockNode]) throws(BlockError) -> BlockNode {
        guard let child = nodes[name] else {
            throw BlockError(errno: ENOENT, "node '\(node)': its file node '\(name)' does not exist; add that node first")
        }
        if let blocker = child.blocker { throw BlockError(errno: EBUSY, "Node '\(child.name)' is busy: \(blocker)") }
        return child
    }
}
