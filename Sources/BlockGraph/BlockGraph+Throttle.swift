import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging

/// Throttle groups (`--object throttle-group`, object-add/del, qom-set) and the per-export
/// limits of block_set_io_throttle (GS: control thread only). block_set_io_throttle puts an
/// implicit throttle node, named `#throttle-<BlockBackend>`, between the BlockBackend and its
/// node, under drain; all-zero limits take it out again. Implicit nodes go when their
/// BlockBackend leaves them (export deleted or revoked); implicit groups (made by
/// block_set_io_throttle without an existing group) go with their last node.
extension BlockGraph {
    static let implicitThrottlePrefix = "#throttle-"

    /// Adds a group (`--object throttle-group`, object-add).
    public func addThrottleGroup(_ options: ThrottleGroupOptions) throws(BlockError) {
        ControlActor.preconditionOnControlThread("addThrottleGroup")
        guard throttleGroups[options.id] == nil else {
            throw BlockError(errno: EEXIST, "attempt to add duplicate property '\(options.id)' to object (type 'container')")
        }
        if let problem = options.limits.validationError { throw BlockError(errno: EINVAL, problem) }
        throttleGroups[options.id] = ThrottleGroup(name: options.id, limits: options.limits)
        Logger(label: "spindle.block").info("added throttle group", metadata: ["group": "\(options.id)"])
    }

    /// Throttle nodes using group `id`, by name.
    public func throttleNodes(inGroup id: String) -> [NodeName] {
        guard let group = throttleGroups[id] else { return [] }
        return nodes.values.filter { ($0.driver as? ThrottleDriver)?.group === group }.map(\.name).sorted { $0.rawValue < $1.rawValue }
    }

    /// Deletes a group (object-del): refused while a throttle node uses it.
    public func deleteThrottleGroup(_ id: String) throws(BlockError) {
        ControlActor.preconditionOnControlThread("deleteThrottleGroup")
        guard throttleGroups[id] != nil else { throw BlockError(errno: ENOENT, "object '\(id)' not found") }
        let users = throttleNodes(inGroup: id)
        guard users.isEmpty else {
            let names = users.map(\.rawValue).joined(separator: "', '")
            throw BlockError(errno: EBUSY, "throttle group '\(id)' is used by throttle node '\(names)'; delete those nodes (or set their exports' limits to 0) first")
        }
        throttleGroups[id] = nil
        implicitThrottleGroups.remove(id)
    }

    /// New limits for a group (qom-set limits, block_set_io_throttle with group=): every
    /// throttle node of the group follows at once; waiting requests within 0.1 s.
    public func setThrottleLimits(_ limits: ThrottleLimits, group id: String) throws(BlockError) {
        ControlActor.preconditionOnControlThread("setThrottleLimits")
        guard let group = throttleGroups[id] else { throw BlockError(errno: ENOENT, "throttle group '\(id)' not found") }
        if let problem = limits.validationError { throw BlockError(errno: EINVAL, problem) }
        group.setLimits(limits)
        Logger(label: "spindle.block").info("changed throttle group limits", metadata: ["group": "\(id)"])
    }

    // MARK: block_set_io_throttle

    /// The implicit throttle node of a BlockBackend, if it has one.
    public func implicitThrottleNode(of backend: BlockBackend) -> BlockNode? {
        guard let root = rootNode(of: backend), root.name.rawValue.hasPrefix(Self.implicitThrottlePrefix) else { return nil }
        return root
    }

    /// The node a BlockBackend serves, below its implicit throttle node if it has one.
    public func servedNode(of backend: BlockBackend) -> BlockNode? {
        implicitThrottleNode(of: backend)?.children.first ?? rootNode(of: backend)
    }

    /// block_set_io_throttle for one BlockBackend: `limits` in group `groupID` (default:
    /// the BlockBackend's name), which is made if it does not exist and otherwise takes
    /// these limits (as QEMU does). All-zero limits remove the BlockBackend's throttling.
    public func setIOThrottle(_ limits: ThrottleLimits, for backend: BlockBackend, group groupID: String?) async throws(BlockError) {
        ControlActor.preconditionOnControlThread("setIOThrottle")
        if let problem = limits.validationError { throw BlockError(errno: EINVAL, problem) }
        guard let served = servedNode(of: backend) else {
            throw BlockError(errno: ENOMEDIUM, "Device '\(backend.name)' has no medium (it was revoked)")
        }
        let current = implicitThrottleNode(of: backend)
        let currentGroup = (current?.driver as? ThrottleDriver)?.group.name
        if limits.isUnlimited {
            guard let current else { return }
            try await removeImplicitThrottle(current, of: backend, below: served)
            return
        }
        let id = groupID ?? currentGroup ?? backend.name
        if throttleGroups[id] != nil {
            try setThrottleLimits(limits, group: id)
        } else {
            try addThrottleGroup(ThrottleGroupOptions(id: id, limits: limits))
            implicitThrottleGroups.insert(id)
        }
        if let current {
            guard currentGroup != id else { return }
            try await removeImplicitThrottle(current, of: backend, below: served)
        }
        let name = NodeName(Self.implicitThrottlePrefix + backend.name)
        let node = try openNode(BlockdevOptions(nodeName: name, driver: .throttle(ThrottleFilterOptions(child: served.name, group: id))))
        do {
            try await withDrained([backend]) { () throws(BlockError) in try moveBackends([backend], from: served.name, to: node.name) }
        } catch {
            try? closeNode(name)
            dropImplicitGroupIfUnused(id)
            throw error
        }
    }

    private func removeImplicitThrottle(_ node: BlockNode, of backend: BlockBackend, below served: BlockNode) async throws(BlockError) {
        let group = (node.driver as? ThrottleDriver)?.group.name
        // The drain waits for the requests the group holds back: an implicit group only this
        // node uses lets them go first, so that lifting a too low limit never waits for it.
        if let group, implicitThrottleGroups.contains(group), throttleNodes(inGroup: group) == [node.name] {
            throttleGroups[group]?.setLimits(ThrottleLimits())
        }
        try await withDrained([backend]) { () throws(BlockError) in try moveBackends([backend], from: node.name, to: served.name) }
        try closeNode(node.name)
        if let group { dropImplicitGroupIfUnused(group) }
    }

    private func dropImplicitGroupIfUnused(_ id: String) {
        guard implicitThrottleGroups.contains(id), throttleNodes(inGroup: id).isEmpty else { return }
        throttleGroups[id] = nil
        implicitThrottleGroups.remove(id)
    }

    /// After a BlockBackend left node `name`: an implicit throttle node nothing uses goes
    /// (with its implicit group). Returns the node it served, if it went.
    @discardableResult
    func closeImplicitThrottleIfUnused(_ name: NodeName) -> NodeName? {
        guard name.rawValue.hasPrefix(Self.implicitThrottlePrefix), let node = nodes[name], node.userCount == 0 else { return nil }
        let group = (node.driver as? ThrottleDriver)?.group.name
        let child = node.children.first?.name
        guard (try? closeNode(name)) != nil else { return nil }
        if let group { dropImplicitGroupIfUnused(group) }
        return child
    }

    /// Throttle nodes built on `node`: a resize of `node` changes their size too, and a
    /// mirror of `node` would miss the writes that go through them.
    public func throttleParents(of node: BlockNode) -> [BlockNode] {
        node.parents.compactMap { nodes[$0] }.filter { $0.driver is ThrottleDriver }
    }
}
