import BlockCommon
import BlockIO
import ControlThread
import CSpindle
import Glibc
import Logging

/// `driver=rbd`: a Ceph RBD image through librbd (loaded at run time). Opening, resizing
/// and closing block on the network and run here, on the control thread; the data path is
/// RbdIO on the IOThread that serves the node's queues. No image locks of our own: RBD's
/// exclusive lock is librbd's (cooperative: a writer asks the holder for it).
@ControlActor
final class RbdDriver: BlockDriver {
    private let rbd: RbdIO
    private let connection: RbdConnection
    private let options: RbdOptions
    private let node: NodeName
    private var closed = false
    private let logger = Logger(label: "spindle.rbd")

    private init(rbd: RbdIO, connection: RbdConnection, options: RbdOptions, node: NodeName) {
        self.rbd = rbd
        self.connection = connection
        self.options = options
        self.node = node
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
        return RbdDriver(rbd: io, connection: connection, options: options, node: node)
    }

    var io: any BlockDriverIO { rbd }
    var children: [BlockNode] { [] }
    func applyPermissions(_ users: [BlockPermissions]) throws(BlockError) {}  // RBD's exclusive lock is librbd's

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
