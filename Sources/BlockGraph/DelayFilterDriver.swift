import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// `driver=x-delay` (TEST ONLY): a filter over another node, `file=`, holding every Nth
/// completion back and failing every Nth request (DelayFilterIO). It is a user of its
/// child for as long as it exists, with the permissions its own users need, so the child's
/// locks follow them and the child cannot be deleted under it.
@ControlActor
final class DelayFilterDriver: BlockDriver {
    private let child: BlockNode
    private let filter: DelayFilterIO

    private init(child: BlockNode, filter: DelayFilterIO) {
        self.child = child
        self.filter = filter
    }

    static func open(_ options: DelayFilterOptions, node: NodeName, nodes: [NodeName: BlockNode]) throws(BlockError) -> DelayFilterDriver {
        guard let child = nodes[options.child] else {
            throw BlockError(errno: ENOENT, "node '\(node)': its file node '\(options.child)' does not exist; add that node first")
        }
        if let blocker = child.blocker { throw BlockError(errno: EBUSY, "Node '\(child.name)' is busy: \(blocker)") }
        // Both would keep their hold state in the same fields of each request.
        if case .delay = child.options.driver {
            throw BlockError(errno: EINVAL, "node '\(node)': an x-delay node cannot filter another x-delay node ('\(child.name)'); give one node both settings")
        }
        let filter = DelayFilterIO(child: child.io, holdEvery: options.holdEvery, holdMilliseconds: options.holdMilliseconds,
                                   failEvery: options.failEvery, failErrno: options.failErrno)
        let driver = DelayFilterDriver(child: child, filter: filter)
        try child.setUser(driver, permissions: [])
        return driver
    }

    var io: any BlockDriverIO { filter }
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
}
