import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// The global-state side of a block driver: what a node of that driver does on the control
/// thread (open, permissions and image locks, resize, close, what the monitor shows). The
/// data path it provides, `io`, is what IOThreads call through BlockBackends. One
/// implementation per driver, each in its own file; `BlockNode.open` picks it by options.
///
/// A new driver (qcow2) adds: a case of BlockDriverOptions (BlockCommon), its keys in
/// SpindleOptions, its data path (a BlockDriverIO in BlockIO), this protocol's
/// implementation in its own file here, and one line in `BlockNode.open`.
@ControlActor
protocol BlockDriver: AnyObject {
    associatedtype Options
    /// Opens the image (or whatever the driver serves) for node `node`. `nodes` are the
    /// graph's nodes, in which a filter finds its child.
    static func open(_ options: Options, node: NodeName, nodes: [NodeName: BlockNode]) throws(BlockError) -> Self

    var io: any BlockDriverIO { get }
    /// Nodes this one is built on (a filter's child): in use as long as this node exists.
    var children: [BlockNode] { get }

    /// The node's users now need `users` (one entry per user; none when it has no users):
    /// take or release image locks, or pass the need down to a child. On a conflict it
    /// throws and leaves the locks as they were.
    func applyPermissions(_ users: [BlockPermissions]) throws(BlockError)

    /// Sets the size (only while every user is drained; a multiple of 512).
    func resize(to size: UInt64) throws(BlockError)

    /// Releases the image (and the children): the node has no users any more.
    func close()

    /// Puts what the host caches of the image on disk (fdatasync) before the node is
    /// inactivated, so the process that takes the image over reads it all.
    func flushToDisk() throws(BlockError)

    /// Reads the image's size again on activation (the other process may have resized
    /// it); only while every user is drained. Returns whether it changed.
    func refreshLength() -> Bool

    /// What query-named-block-nodes shows of it.
    var display: BlockNodeDisplay { get }
}

/// What query-named-block-nodes shows of a node beyond its name, driver and size.
public struct BlockNodeDisplay: Sendable, Equatable {
    /// The image file name; the node name for drivers without one (as QEMU), and a filter's
    /// child's file for a filter.
    public var file: String
    public var cacheDirect = false
    public var cacheNoFlush = false
    public init(file: String) { self.file = file }
}

extension BlockNode {
    /// Opens a node with the driver its options name (GS: control thread only).
    static func open(_ options: BlockdevOptions, nodes: [NodeName: BlockNode]) throws(BlockError) -> BlockNode {
        ControlActor.preconditionOnControlThread("BlockNode.open")
        let name = options.nodeName
        let driver: any BlockDriver
        switch options.driver {
        case .file(let file): driver = try FileDriver.open(file, node: name, nodes: nodes)
        case .null(let null): driver = try NullDriver.open(null, node: name, nodes: nodes)
        case .delay(let delay): driver = try DelayFilterDriver.open(delay, node: name, nodes: nodes)
        case .rbd(let rbd): driver = try RbdDriver.open(rbd, node: name, nodes: nodes)
        }
        if options.active {
            do throws(BlockError) {
                // As QEMU: an active node cannot be built on an inactive one.
                if let child = driver.children.first(where: { !$0.isActive }) {
                    throw BlockError(errno: EPERM, "Inactive '\(child.name)' can't be a file child of active '\(name)' (add it with active=off, or activate '\(child.name)' first)")
                }
                // Opening takes no permission locks yet (as QEMU): they follow the users'
                // permissions. But refuse at once an image that another process writes, so
                // that startup fails early. An inactive node skips this: someone else owns it.
                try driver.applyPermissions([.consistentRead])
                try driver.applyPermissions([])
            } catch {
                driver.close()
                throw error
            }
        }
        return BlockNode(name: name, options: options, driver: driver)
    }
}
