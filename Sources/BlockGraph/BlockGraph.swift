import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging

/// Hooks a device (an export) gives its BlockBackend, called on the control thread.
@ControlActor
public protocol BlockDeviceOps: AnyObject {
    /// The BlockBackend is running again after a drain: take requests off the queues again.
    func drainedEnd()
    /// The root node's size changed (while drained). Returns whether the guest was told.
    func resized() -> Bool
}

/// What a resize did.
public struct ResizeResult: Sendable {
    public let oldSize: UInt64
    public let newSize: UInt64
    /// BlockBackends whose device told its guest (e.g. a vhost-user config-change message).
    public let notifiedDevices: [String]
    /// BlockBackends whose device could not tell its guest.
    public let unnotifiedDevices: [String]
}

/// The global-state (GS) API of the block layer: nodes, BlockBackends, attach/detach, drain.
/// Every function runs on the control thread only: the compiler enforces it (ControlActor
/// isolation) and each also checks it at run time. Graph changes happen only while the
/// affected BlockBackends are drained.
@ControlActor
public final class BlockGraph {
    /// Nodes added by name and the implicit ones they opened (ImplicitNodes.swift).
    public internal(set) var nodes: [NodeName: BlockNode] = [:]
    public private(set) var backends: [String: BlockBackend] = [:]
    var deviceOps: [ObjectIdentifier: any BlockDeviceOps] = [:]
    private var drainWaits: [ObjectIdentifier: [CheckedContinuation<Void, Never>]] = [:]
    var attachments: [ObjectIdentifier: NodeName] = [:]
    /// BlockBackends whose device accepts an inactive node (allow-inactive).
    var inactiveAllowed: Set<ObjectIdentifier> = []
    /// BlockBackends kept quiesced because their node is inactive, with the capacity they
    /// had then: their requests wait in the rings until activation, which tells the device
    /// if the capacity changed meanwhile (BlockGraph+Activation.swift).
    var heldWhileInactive: [ObjectIdentifier: UInt64] = [:]
    private let logger = Logger(label: "spindle.block")
    /// Throttle groups by id (BlockGraph+Throttle.swift).
    public internal(set) var throttleGroups: [String: ThrottleGroup] = [:]
    /// Groups block_set_io_throttle made; they go with their last throttle node.
    var implicitThrottleGroups: Set<String> = []
    /// Told when a node's image was found corrupt (BlockGraph+Corruption.swift).
    public var onImageCorrupted: (@ControlActor (ImageCorruption) -> Void)?

    public init() {}

    // MARK: nodes

    /// Opens a node (`--blockdev`, QMP blockdev-add).
    @discardableResult
    public func openNode(_ options: BlockdevOptions) throws(BlockError) -> BlockNode {
        ControlActor.preconditionOnControlThread("openNode")
        guard nodes[options.nodeName] == nil else {
            throw BlockError(errno: EEXIST, "node name '\(options.nodeName)' is already in use; choose another node-name")
        }
        let node = try BlockNode.open(options, nodes: nodes, throttleGroups: throttleGroups)
        nodes[options.nodeName] = node
        watchOutsideResizes(of: node)
        watchCorruption(of: node)
        logger.info("opened node", metadata: ["node": "\(node.name)", "driver": "\(node.driverName)", "size": "\(node.length)"])
        registerImplicitNodes(below: node)
        return node
    }

    /// Closes a node no BlockBackend uses (QMP blockdev-del).
    public func closeNode(_ name: NodeName) throws(BlockError) {
        ControlActor.preconditionOnControlThread("closeNode")
        guard let node = nodes[name] else { throw BlockError(errno: ENOENT, "node '\(name)' does not exist") }
        try checkOwnedByMonitor(node)
        if let blocker = node.blocker { throw BlockError(errno: EBUSY, "Node '\(name)' is busy: \(blocker)") }
        try checkNoFilters(on: node, action: "delete")
        guard node.userCount == 0 else {
            throw BlockError(errno: EBUSY, "node '\(name)' is in use by \(node.userCount) export(s); delete or revoke them first")
        }
        node.close()
        nodes[name] = nil
        logger.info("closed node", metadata: ["node": "\(name)"])
        forgetClosedImplicitNodes()
    }

    /// Refuses to act on a node that filter nodes are built on.
    private func checkNoFilters(on node: BlockNode, action: String) throws(BlockError) {
        guard !node.parents.isEmpty else { return }
        let filters = node.parents.map(\.rawValue).sorted().joined(separator: "', '")
        throw BlockError(errno: EBUSY, "node '\(node.name)' is the file of filter node '\(filters)'; \(action) that node instead, or delete it first")
    }

    // MARK: BlockBackends

    /// Creates a BlockBackend (named after its device) and attaches it to `node` with
    /// `permissions`. With `allowInactive` the node may be inactive: the BlockBackend then
    /// starts quiesced (requests wait) and takes its locks when the node is activated.
    public func createBackend(name: String, node: NodeName, permissions: BlockPermissions,
                              allowInactive: Bool = false) throws(BlockError) -> BlockBackend {
        ControlActor.preconditionOnControlThread("createBackend")
        guard backends[name] == nil else { throw BlockError(errno: EEXIST, "a BlockBackend named '\(name)' already exists") }
        guard let root = nodes[node] else {
            throw BlockError(errno: ENOENT, "node '\(node)' does not exist; add it with --blockdev (or blockdev-add) first")
        }
        if let blocker = root.blocker { throw BlockError(errno: EBUSY, "Node '\(node)' is busy: \(blocker)") }
        let backend = BlockBackend(name: name, permissions: [])
        try root.setUser(backend, permissions: permissions, allowInactive: allowInactive)
        // A new BlockBackend has no requests: it is trivially drained for its first attach.
        _ = backend.beginQuiesce(onDrained: {})
        backend.setRoot(root.io, permissions: permissions)
        if root.isActive {
            _ = backend.endQuiesce()
        } else {
            heldWhileInactive[ObjectIdentifier(backend)] = backend.length  // the quiesce stays until activation
        }
        backends[name] = backend
        attachments[ObjectIdentifier(backend)] = node
        if allowInactive { inactiveAllowed.insert(ObjectIdentifier(backend)) }
        return backend
    }

    /// The node a BlockBackend is attached to, if any.
    public func rootNode(of backend: BlockBackend) -> BlockNode? {
        attachments[ObjectIdentifier(backend)].flatMap { nodes[$0] }
    }

    public func setDeviceOps(_ ops: (any BlockDeviceOps)?, for backend: BlockBackend) {
        deviceOps[ObjectIdentifier(backend)] = ops
    }

    /// Detaches a drained BlockBackend from its root node: later requests fail with EIO.
    public func detach(_ backend: BlockBackend) {
        ControlActor.preconditionOnControlThread("detach")
        precondition(backend.isDrained, "detach of BlockBackend '\(backend.name)' while not drained")
        guard let nodeName = attachments.removeValue(forKey: ObjectIdentifier(backend)) else { return }
        backend.setRoot(nil, permissions: [])
        nodes[nodeName]?.removeUser(backend)
        closeImplicitThrottleIfUnused(nodeName)
        closeImplicitIfUnused(nodeName)
        // Detached, its requests fail at once instead of waiting for an activation: the
        // caller's drain (still held) is the one whose end lets the queues run again.
        if heldWhileInactive.removeValue(forKey: ObjectIdentifier(backend)) != nil { _ = backend.endQuiesce() }
    }

    /// Forgets a BlockBackend; it must be detached (or is detached now, under drain).
    public func deleteBackend(_ backend: BlockBackend) async {
        ControlActor.preconditionOnControlThread("deleteBackend")
        await withDrained([backend]) { detach(backend) }
        backends[backend.name] = nil
        deviceOps[ObjectIdentifier(backend)] = nil
        inactiveAllowed.remove(ObjectIdentifier(backend))
    }

    /// The BlockBackends attached to a node.
    public func users(of node: NodeName) -> [BlockBackend] {
        backends.values.filter { attachments[ObjectIdentifier($0)] == node }
    }

    // MARK: resize and revocation

    /// Changes a node's size (QMP block_resize): drains every BlockBackend using it, grows
    /// (or, where the driver allows, shrinks) the image, resumes, then tells each device so
    /// that it can update its guest. Requests past the new end fail with EIO.
    public func resize(node name: NodeName, to size: UInt64) async throws(BlockError) -> ResizeResult {
        ControlActor.preconditionOnControlThread("resize")
        guard let node = nodes[name] else { throw BlockError(errno: ENOENT, "node '\(name)' does not exist") }
        if let blocker = node.blocker { throw BlockError(errno: EBUSY, "Node '\(name)' is busy: \(blocker)") }
        // Throttle filters above it only pass its size on: their users are drained too.
        let throttles = throttleParents(of: node)
        if throttles.count != node.parents.count { try checkNoFilters(on: node, action: "resize") }
        guard node.isActive else {
            throw BlockError(errno: EPERM, "Permission 'resize' unavailable on inactive node '\(name)' (activate it first with blockdev-set-active)")
        }
        // A filter's size is its child's: whoever uses a node below it sees the change too.
        var below: [BlockNode] = [node]
        var index = 0
        while index < below.count {
            below += below[index].children
            index += 1
        }
        let affected = (below + throttles).flatMap { self.users(of: $0.name) }
        let oldSize = node.length
        if node.driver is Qcow2Driver && !node.parents.isEmpty {
            // Its data path is rebuilt by the resize; what is built on it would keep the old one.
            throw BlockError(errno: ENOTSUP, "node '\(name)': resizing a qcow2 node that other nodes are built on is not supported yet")
        }
        try await withDrained(affected) { () throws(BlockError) in
            let before = node.io
            try node.resize(to: size)
            adoptResizedDataPath(of: node, replacing: before)
        }
        let (notified, unnotified) = tellDevicesResized(affected)
        logger.info("resized node", metadata: ["node": "\(name)", "from": "\(oldSize)", "to": "\(size)"])
        return ResizeResult(oldSize: oldSize, newSize: size, notifiedDevices: notified, unnotifiedDevices: unnotified)
    }

    /// After a resize under drain: a qcow2 node's rebuilt data path (same image, new
    /// Qcow2IO) goes to its BlockBackends and to the qcow2 overlays built on it.
    func adoptResizedDataPath(of node: BlockNode, replacing before: any BlockDriverIO) {
        guard node.io !== before else { return }
        setDataPath(node.io, for: users(of: node.name))
        guard let rebuilt = node.io as? Qcow2IO else { return }
        for parent in node.parents {
            (nodes[parent]?.io as? Qcow2IO)?.replaceBacking(.qcow2(rebuilt))
        }
    }

    /// Tells each device on `backends` that its disk changed size (block_resize, or a resize
    /// made elsewhere); returns the names of those told and of those that could not be.
    func tellDevicesResized(_ backends: [BlockBackend]) -> (notified: [String], unnotified: [String]) {
        var notified: [String] = []
        var unnotified: [String] = []
        for backend in backends {
            if deviceOps[ObjectIdentifier(backend)]?.resized() == true {
                notified.append(backend.name)
            } else {
                unnotified.append(backend.name)
            }
        }
        return (notified, unnotified)
    }

    /// Withdraws a BlockBackend's access to its image (drive_del): drains it (in-flight
    /// requests complete), detaches it from its root node, and closes that node if nothing
    /// else uses it, which releases the image and its locks and frees the node name. The
    /// BlockBackend stays, with no root: every later request fails with EIO.
    /// Returns the name of the node that was closed, if any.
    @discardableResult
    public func revoke(_ backend: BlockBackend) async -> NodeName? {
        ControlActor.preconditionOnControlThread("revoke")
        // The node it serves: below its implicit throttle node (which detach closes) if any.
        let nodeName = servedNode(of: backend)?.name ?? attachments[ObjectIdentifier(backend)]
        let closed = await withDrained([backend]) { () -> NodeName? in
            detach(backend)
            guard let nodeName, nodes[nodeName]?.userCount == 0, (try? closeNode(nodeName)) != nil else { return nil }
            return nodeName
        }
        logger.notice("revoked BlockBackend", metadata: ["backend": "\(backend.name)", "node": "\(nodeName.map { "\($0)" } ?? "-")"])
        return closed
    }

    // MARK: drain

    /// Quiesces a BlockBackend: its devices stop taking requests off their queues (they stay
    /// there) and this returns once every in-flight request has completed. Nests; pair with
    /// `resume`. Waits without spinning: the IOThread that ends the last request wakes us.
    public func drain(_ backend: BlockBackend) async {
        ControlActor.preconditionOnControlThread("drain")
        if beginDrain(backend) { return }
        await waitUntilDrained(backend)
    }

    /// The first half of `drain`: stops new requests; returns whether none is in flight.
    func beginDrain(_ backend: BlockBackend) -> Bool {
        backend.beginQuiesce(onDrained: { [weak self] in
            Task { @ControlActor in self?.recheckDrain(backend) }
        })
    }

    /// The second half of `drain`: returns once the last in-flight request has ended.
    func waitUntilDrained(_ backend: BlockBackend) async {
        await withCheckedContinuation { continuation in
            drainWaits[ObjectIdentifier(backend), default: []].append(continuation)
            recheckDrain(backend)
        }
    }

    private func recheckDrain(_ backend: BlockBackend) {
        guard backend.isDrained, let waits = drainWaits.removeValue(forKey: ObjectIdentifier(backend)) else { return }
        for wait in waits { wait.resume() }
    }

    /// Ends one `drain`; when the last ends, the devices take requests again.
    public func resume(_ backend: BlockBackend) {
        ControlActor.preconditionOnControlThread("resume")
        if backend.endQuiesce() {
            deviceOps[ObjectIdentifier(backend)]?.drainedEnd()
        }
    }

    /// Drains, runs a graph change, resumes.
    public func withDrained<T, E: Error>(_ backends: [BlockBackend], _ body: () throws(E) -> T) async throws(E) -> T {
        for backend in backends { await drain(backend) }
        defer { for backend in backends { resume(backend) } }
        return try body()
    }

    /// Closes everything (daemon shutdown): backends must be deleted first.
    public func closeAllNodes() {
        // Filters first: a node closes once nothing is built on it any more.
        var closedSome = true
        while closedSome {
            closedSome = false
            for name in Array(nodes.keys) where nodes[name]?.parents.isEmpty == true {
                if (try? closeNode(name)) != nil { closedSome = true }
            }
        }
    }
}
