import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// `driver=throttle`: a filter over another node, `file=`, whose reads and writes share the
/// limits of a throttle group (ThrottleFilterIO). Like x-delay, it is a user of its child
/// with its own users' permissions, so the child cannot be deleted under it; the group
/// cannot be deleted while a throttle node uses it.
@ControlActor
final class ThrottleDriver: FilterDriver {
    let child: BlockNode
    private let filter: ThrottleFilterIO

    private init(child: BlockNode, filter: ThrottleFilterIO) {
        self.child = child
        self.filter = filter
    }

    static func open(_ options: ThrottleFilterOptions, node: NodeName, nodes: [NodeName: BlockNode]) throws(BlockError) -> ThrottleDriver {
        throw BlockError(errno: EINVAL, "node '\(node)': a throttle node needs the graph's throttle groups")
    }

    static func open(_ options: ThrottleFilterOptions, node: NodeName, nodes: [NodeName: BlockNode],
                     groups: [String: ThrottleGroup]) throws(BlockError) -> ThrottleDriver {
        let child = try filteredChild(options.child, of: node, in: nodes)
        guard let group = groups[options.group] else {
            throw BlockError(errno: ENOENT, "Throttle group '\(options.group)' does not exist (add it with --object throttle-group,id=\(options.group) or object-add first)")
        }
        // Both would keep their queue state in the same fields of each request.
        if case .throttle = child.options.driver {
            throw BlockError(errno: EINVAL, "node '\(node)': a throttle node cannot filter another throttle node ('\(child.name)'); put both exports' nodes in one group instead")
        }
        let driver = ThrottleDriver(child: child, filter: ThrottleFilterIO(child: child.io, group: group))
        try child.setUser(driver, permissions: [])
        return driver
    }

    var group: ThrottleGroup { filter.group }
    var io: any BlockDriverIO { filter }
}
