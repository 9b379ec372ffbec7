import BlockCommon
import BlockIO
import ControlThread
import CSpindle
import Glibc
import Logging

/// `driver=rbd`: a Ceph RBD image through librbd (loaded at run time). Opening, resizing
/// and closing block on the network and run here, on the control thread; the data path is
/// RbdIO on the IOThread that serves the node's queues. Ownership is RBD's exclusive lock,
/// taken explicitly while the node is active and written (RbdExclusiveLock); a resize made
/// elsewhere is seen through librbd's update watch (RbdUpdateWatch).
@ControlActor
final class RbdDriver: BlockDriver, OutsideResizeSource {
    private let rbd: RbdIO
    private let connection: RbdConnection
    private let options: RbdOptions
    private let node: NodeName
    private var closed = false
    private var lock: RbdExclusiveLock
    private var updateWatch: RbdUpdateWatch?
    /// Set by the graph: the image may have changed size elsewhere.
    var onOutsideResize: (@ControlActor () -> Void)?
    private let logger = Logger(label: "spindle.rbd")

    private init(rbd: RbdIO, connection: RbdConnection, options: RbdOptions, node: NodeName) {
        self.rbd = rbd
        self.connection = connection
        self.options = options
        self.node = node
        self.lock = RbdExclusiveLock(image: connection.image, node: node, imageName: options.displayName)
    }

    static func open(_ options: RbdOptions, node: NodeName, nodes: [NodeName: BlockNode]) throws(BlockError) -> RbdDriver {
        try RbdLibrary.load(for: node)
        let connection = try RbdConnection.open(options, node: node)
        var size: UInt64 = 0
        let sizeRC = spindle_rbd_get_size(connection.image, &size)
        let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard sizeRC == 0, fd >= 0 else {
            if fd >= 0 { Glibc.close(fd) }
            connection.close()
            let code = sizeRC != 0 ? -sizeRC : errno
            throw BlockError(errno: code, "node '\(node)': cannot set up image '\(options.displayName)': \(String(cString: strerror(code)))")
        }
        let notifyRC = spindle_rbd_set_image_notification(connection.image, fd)
        guard notifyRC == 0 else {
            Glibc.close(fd)
            connection.close()
            throw BlockError(errno: -notifyRC, "node '\(node)': librbd refuses a completion eventfd for '\(options.displayName)': \(String(cString: strerror(-notifyRC)))")
        }
        let io = RbdIO(image: connection.image, notificationFD: fd, length: size, writable: !options.readOnly,
                       discardUnmaps: options.discardUnmap, nodeName: node.rawValue)
        let driver = RbdDriver(rbd: io, connection: connection, options: options, node: node)
        // A snapshot never changes size; the image itself may, from any host.
        if options.snapshot == nil {
            do throws(BlockError) {
                driver.updateWatch = try RbdUpdateWatch.start(image: connection.image, node: node, imageName: options.displayName) {
                    [weak driver] in driver?.onOutsideResize?()
                }
            } catch {
                connection.close()
                Glibc.close(fd)
                throw error
            }
        }
        return driver
    }

    var io: any BlockDriverIO { rbd }
    var children: [BlockNode] { [] }
    /// The exclusive lock is held while some user writes (an inactive node's users are none).
    func applyPermissions(_ users: [BlockPermissions]) throws(BlockError) {
        try lock.set(held: users.contains { $0.contains(.write) })
    }

    /// Whether this process holds the image's exclusive lock now.
    var holdsExclusiveLock: Bool { lock.held }

    /// Another client that holds the image's exclusive lock and still watches it, if any
    /// (RbdLockWait: a start-up waits for it rather than fail).
    var watchingLockHolder: String? { lock.held ? nil : lock.watchingHolder() }

    func currentImageSize() -> UInt64? {
        var size: UInt64 = 0
        return spindle_rbd_get_size(connection.image, &size) == 0 ? size : nil
    }

    func resize(to size: UInt64) throws(BlockError) {
        guard rbd.writable else {
            throw BlockError(errno: EROFS, "node '\(node)' is read-only (a snapshot, or read-only=on); it cannot be resized")
        }
        let rc = spindle_rbd_resize(connection.image, size)
        guard rc == 0 else {
            throw BlockError(errno: -rc, "node '\(node)': rbd_resize of '\(options.displayName)' to \(size) bytes failed: \(String(cString: strerror(-rc)))")
        }
        rbd.setLength(size)
    }

    func close() {
        guard !closed else { return }
        closed = true
        // The watcher stops on its IOThread once the last queue has gone (the daemon posts
        // it); wait for it, briefly, rather than pull the image from under it.
        var waited = 0
        while rbd.watchersRunning > 0 && waited < 5000 {
            usleep(1000)
            waited += 1
        }
        guard rbd.watchersRunning == 0 else {
            logger.error("node '\(node)': its completion watcher is still running; the image is left open (leaked) rather than closed under it")
            return
        }
        updateWatch?.stop()
        updateWatch = nil
        connection.close()
        Glibc.close(rbd.notificationFD)
        logger.info("closed rbd image", metadata: ["node": "\(node)", "image": "\(options.displayName)"])
    }

    /// What librbd's cache holds goes to the cluster (before another process takes over).
    func flushToDisk() throws(BlockError) {
        let rc = spindle_rbd_flush(connection.image)
        guard rc == 0 else {
            throw BlockError(errno: -rc, "node '\(node)': flushing '\(options.displayName)' failed: \(String(cString: strerror(-rc)))")
        }
    }

    func refreshLength() -> Bool {
        var size: UInt64 = 0
        guard spindle_rbd_get_size(connection.image, &size) == 0, size != rbd.length else { return false }
        rbd.setLength(size)
        return true
    }

    var display: BlockNodeDisplay { BlockNodeDisplay(file: options.displayName) }
}
