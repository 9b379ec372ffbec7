import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// A node of the block graph as the control thread sees it: its options, its driver (which
/// holds the open image and its locks), who uses it. Its data path (`io`) is what IOThreads
/// call, through a BlockBackend; the node itself never knows which device that is.
@ControlActor
public final class BlockNode {
    public let name: NodeName
    /// Changed only by a commit that switches a qcow2 node's backing node.
    public internal(set) var options: BlockdevOptions
    let driver: any BlockDriver
    /// Users of this node, with the permissions each holds: BlockBackends, and the filter
    /// nodes built on it (through their drivers).
    private var users: [ObjectIdentifier: BlockPermissions] = [:]
    /// Filter nodes built on this one: while any exists this node cannot be deleted or
    /// resized on its own.
    public internal(set) var parents: Set<NodeName> = []
    /// Why the node may not be deleted or given new users now (e.g. "block device is in use
    /// by block job: mirror"), as QEMU's op blockers.
    public internal(set) var blocker: String?

    /// False while another process may own the image (migration handover): the node takes
    /// no permissions or image locks; its users' needs are kept and taken again on
    /// activation. An active node's children are active.
    public internal(set) var isActive: Bool
    /// A backing layer the layer above opened from its image's header (QEMU's implicit
    /// node, named `#block...`): owned by that layer, closed when it stops using it
    /// (ImplicitNodes.swift); never deleted by the monitor, never in the state file.
    public let isImplicit: Bool
    /// Set once closed: the graph forgets closed implicit nodes.
    private(set) var isClosed = false

    init(name: NodeName, options: BlockdevOptions, driver: any BlockDriver, implicit: Bool = false) {
        self.name = name
        self.options = options
        self.driver = driver
        self.isActive = options.active
        self.isImplicit = implicit
        for child in driver.children { child.parents.insert(name) }
    }

    public var io: any BlockDriverIO { driver.io }
    /// What each user needs now (a reopen to read-only refuses writers).
    var userNeeds: [BlockPermissions] { Array(users.values) }
    public var userCount: Int { users.count }
    public var driverName: String { options.driver.driverName }
    public var readOnly: Bool { !io.writable }
    public var length: UInt64 { io.length }
    /// What query-named-block-nodes shows beyond name, driver and size.
    public var display: BlockNodeDisplay { driver.display }
    /// The nodes this one is built on (a filter's child).
    public var children: [BlockNode] { driver.children }

    /// Takes the locks the current users need (none while inactive).
    func updateLocks() throws(BlockError) {
        try driver.applyPermissions(isActive ? Array(users.values) : [])
    }

    /// Adds a user (a BlockBackend, or a filter built on this node) or changes what it
    /// needs. All or nothing: on a lock conflict the user keeps what it had. On an inactive
    /// node only a user that accepts inactivity (an export with allow-inactive) may ask
    /// for write or resize, as in QEMU.
    func setUser(_ user: AnyObject, permissions: BlockPermissions, allowInactive: Bool = false) throws(BlockError) {
        if permissions.contains(.write) && !io.writable {
            throw BlockError(errno: EROFS, "node '\(name)' is read-only; it cannot be used for writing (use writable=off, or open the node without read-only=on)")
        }
        if !isActive && !allowInactive, let denied = [BlockPermissions.write, .resize].first(where: permissions.contains) {
            throw BlockError(errno: EPERM, "Permission '\(denied)' unavailable on inactive node '\(name)' (activate it first with blockdev-set-active)")
        }
        let key = ObjectIdentifier(user)
        let previous = users.updateValue(permissions, forKey: key)
        do {
            try updateLocks()
        } catch {
            users[key] = previous
            try? updateLocks()
            throw error
        }
    }

    func removeUser(_ user: AnyObject) {
        users.removeValue(forKey: ObjectIdentifier(user))
        try? updateLocks()
    }

    /// Sets the size (GS: only while every user is drained). What sizes a driver takes is
    /// its own: files only grow, null-co takes any, a filter resizes its child.
    func resize(to size: UInt64) throws(BlockError) {
        ControlActor.preconditionOnControlThread("BlockNode.resize")
        guard size % 512 == 0 else {
            throw BlockError(errno: EINVAL, "node '\(name)': size \(size) is not a multiple of 512 bytes")
        }
        try driver.resize(to: size)
    }

    /// Closes the image, releasing its locks and its children. Only without users.
    func close() {
        precondition(users.isEmpty, "closing node '\(name)' while it has users")
        let children = driver.children
        driver.close()
        for child in children { child.parents.remove(name) }
        isClosed = true
    }
}
