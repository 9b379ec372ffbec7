import BlockCommon
import BlockIO
import ControlThread
import CSpindle
import Glibc
import Logging

/// A node of the block graph as the control thread sees it: its options, its open image,
/// its locks, how many BlockBackends use it. Its data path (`io`) is what IOThreads call,
/// through a BlockBackend; the node itself never knows which device that is.
@ControlActor
public final class BlockNode {
    public let name: NodeName
    public let options: BlockdevOptions
    public let io: any BlockDriverIO
    /// Open file, for `file` nodes; -1 once closed or for drivers without one.
    private(set) var fd: Int32
    private let path: String?
    private let locking: Bool
    /// BlockBackends attached to this node, with the permissions each holds.
    private var users: [ObjectIdentifier: BlockPermissions] = [:]
    /// Why the node may not be deleted or given new users now (e.g. "block device is in use
    /// by block job: mirror"), as QEMU's op blockers.
    public internal(set) var blocker: String?

    init(name: NodeName, options: BlockdevOptions, io: any BlockDriverIO, fd: Int32, path: String?, locking: Bool) {
        self.name = name
        self.options = options
        self.io = io
        self.fd = fd
        self.path = path
        self.locking = locking
    }

    public var userCount: Int { users.count }
    public var isOpen: Bool { fd >= 0 || path == nil }
    public var driverName: String { options.driver.driverName }
    public var readOnly: Bool { !io.writable }
    public var length: UInt64 { io.length }

    /// Opens the image and returns the node (GS: control thread only).
    static func open(_ options: BlockdevOptions) throws(BlockError) -> BlockNode {
        ControlActor.preconditionOnControlThread("BlockNode.open")
        switch options.driver {
        case .null(let null):
            let io = NullIO(length: null.size, readZeroes: null.readZeroes, writable: !null.readOnly)
            return BlockNode(name: options.nodeName, options: options, io: io, fd: -1, path: nil, locking: false)
        case .file(let file):
            return try openFile(options, file)
        }
    }

    private static func openFile(_ options: BlockdevOptions, _ file: FileOptions) throws(BlockError) -> BlockNode {
        let node = options.nodeName
        var file = file
        var flags = O_CLOEXEC | (file.readOnly ? O_RDONLY : O_RDWR)
        if file.direct { flags |= O_DIRECT }
        var fd = Glibc.open(file.filename, flags)
        if fd < 0 && file.autoReadOnly && !file.readOnly && [EACCES, EROFS, EPERM].contains(errno) {
            // auto-read-only=on, as QEMU: fall back to a read-only node.
            file.readOnly = true
            fd = Glibc.open(file.filename, (flags & ~O_RDWR) | O_RDONLY)
        }
        guard fd >= 0 else {
            let e = errno
            var hint = ""
            if e == ENOENT { hint = " (create it first, e.g. truncate -s 1G \(file.filename))" }
            if e == EINVAL && file.direct { hint = " (the filesystem may not support O_DIRECT: drop cache.direct=on)" }
            if e == EACCES || e == EROFS { hint = file.readOnly ? "" : " (use read-only=on for a read-only image)" }
            throw BlockError(errno: e, "node '\(node)': cannot open '\(file.filename)': \(String(cString: strerror(e)))\(hint)")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw BlockError(errno: e, "node '\(node)': cannot stat '\(file.filename)': \(String(cString: strerror(e)))")
        }
        let isBlockDevice = (info.st_mode & S_IFMT) == S_IFBLK
        guard isBlockDevice || (info.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(fd)
            throw BlockError(errno: EINVAL, "node '\(node)': '\(file.filename)' is neither a regular file nor a block device")
        }
        var length = UInt64(info.st_size)
        var memoryAlignment = 1
        var offsetAlignment = 1
        if isBlockDevice {
            let size = spindle_blkdev_size(fd)
            if size >= 0 { length = UInt64(size) }
        }
        if file.direct {
            var memAlign: UInt32 = 0
            var offAlign: UInt32 = 0
            if spindle_dio_alignment(fd, &memAlign, &offAlign) == 0, memAlign > 0, offAlign > 0 {
                memoryAlignment = Int(memAlign)
                offsetAlignment = Int(offAlign)
            } else if isBlockDevice, case let sector = spindle_blkdev_logical_block_size(fd), sector > 0 {
                memoryAlignment = Int(sector)
                offsetAlignment = Int(sector)
            } else {
                memoryAlignment = 4096
                offsetAlignment = 512
            }
        }
        let io = FileIO(fd: fd, length: length, writable: !file.readOnly, direct: file.direct,
                        memoryAlignment: memoryAlignment, offsetAlignment: offsetAlignment,
                        discardUnmaps: file.discardUnmap, ignoresFlush: file.noFlush)
        let result = BlockNode(name: node, options: options, io: io, fd: fd, path: file.filename, locking: file.locking)
        // Opening takes no permission locks yet (as QEMU): they follow the users' permissions.
        // But refuse at once an image that another process writes, so that startup fails early.
        try result.updateLocks(adding: [.consistentRead])
        try result.updateLocks()
        return result
    }

    /// Takes the permission locks that the current users (plus `adding`) need.
    func updateLocks(adding extra: BlockPermissions = []) throws(BlockError) {
        guard locking, fd >= 0, let path else { return }
        var held: BlockPermissions = extra
        for permissions in users.values { held.formUnion(permissions) }
        let sharedBits = users.values.reduce(ImageLock.sharedBits(for: extra)) { $0 & ImageLock.sharedBits(for: $1) }
        try ImageLock.apply(fd: fd, held: ImageLock.qemuBits(held), shared: sharedBits, path: path)
    }

    func addUser(_ backend: BlockBackend, permissions: BlockPermissions) throws(BlockError) {
        if permissions.contains(.write) && !io.writable {
            throw BlockError(errno: EROFS, "node '\(name)' is read-only; it cannot be used for writing (use writable=off, or open the node without read-only=on)")
        }
        try updateLocks(adding: permissions)
        users[ObjectIdentifier(backend)] = permissions
    }

    func removeUser(_ backend: BlockBackend) {
        users.removeValue(forKey: ObjectIdentifier(backend))
        try? updateLocks()
    }

    /// Sets the size (GS: only while every user is drained). Files grow with ftruncate;
    /// shrinking a file or resizing a block device is refused (data would be lost, or the
    /// device has its own size); null-co takes any size.
    func resize(to size: UInt64) throws(BlockError) {
        ControlActor.preconditionOnControlThread("BlockNode.resize")
        guard size % 512 == 0 else {
            throw BlockError(errno: EINVAL, "node '\(name)': size \(size) is not a multiple of 512 bytes")
        }
        if let null = io as? NullIO {
            null.setLength(size)
            return
        }
        guard let file = io as? FileIO, fd >= 0 else { throw BlockError(errno: ENOTSUP, "node '\(name)' cannot be resized") }
        guard file.writable else { throw BlockError(errno: EROFS, "node '\(name)' is read-only; it cannot be resized") }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw BlockError(errno: ENOTSUP, "node '\(name)': only regular image files can be resized")
        }
        guard size >= file.length else {
            throw BlockError(errno: ENOTSUP, "node '\(name)': shrinking an image is not supported (it would drop data past \(size) bytes)")
        }
        guard size <= UInt64(Int64.max), ftruncate(fd, off_t(size)) == 0 else {
            throw BlockError(errno: errno, "node '\(name)': cannot grow '\(path ?? "")' to \(size) bytes: \(String(cString: strerror(errno)))")
        }
        file.setLength(size)
    }

    /// Closes the image, releasing its locks. Only without users.
    func close() {
        precondition(users.isEmpty, "closing node '\(name)' while it has users")
        if fd >= 0 {
            // Whatever the guests left in the page cache reaches the disk before we let go.
            if io.writable && fdatasync(fd) != 0 {
                Logger(label: "spindle.block").error("node '\(name)': flushing '\(path ?? "")' before closing failed: \(String(cString: strerror(errno)))")
            }
            ImageLock.releaseAll(fd: fd)
            Glibc.close(fd)
            fd = -1
        }
    }
}
