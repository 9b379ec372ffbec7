import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// `driver=x-delay` (TEST ONLY): a filter over another node, `file=`, holding every Nth
/// completion back and failing every Nth request (DelayFilterIO). It is a user of its
/// child for as long as it exists, with the permissions its own users need, so the child's
/// locks follow them and the child cannot be deleted under it.
@ControlActor
final class DelayFilterDriver: FilterDriver {
    let child: BlockNode
    private let filter: DelayFilterIO

    private init(child: BlockNode, filter: DelayFilterIO) {
        self.child = child
        self.filter = filter
    }

    static func open(_ options: DelayFilterOptions, node: NodeName, nodes: [NodeName: BlockNode]) throws(BlockError) -> DelayFilterDriver {
        let child = try filteredChild(options.child, of: node, in: nodes)
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
}
