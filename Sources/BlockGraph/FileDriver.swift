import BlockCommon
import BlockIO
import ControlThread
import CSpindle
import Glibc
import Logging

/// `driver=file`: a regular image file or a block device, read and written through the
/// IOThreads' io_uring (FileIO). The driver owns the file descriptor and is the only one to
/// close it; FileIO borrows its number. Locks are QEMU's OFD image locks (ImageLock).
@ControlActor
final class FileDriver: BlockDriver {
    let node: NodeName
    /// Its read-only flag changes with a reopen (FileDriver+Reopen).
    var options: FileOptions
    let file: FileIO
    /// The open image; nil once closed.
    private var descriptor: OwnedFileDescriptor?
    /// Its number, for lock and stat calls while it is open (a reopen keeps the number).
    let fd: Int32
    var isOpen: Bool { descriptor != nil }
    /// The users' needs the image's locks were last taken for (a reopen moves them).
    var lockedFor: [BlockPermissions] = []

    private init(node: NodeName, options: FileOptions, descriptor: consuming OwnedFileDescriptor, file: FileIO) {
        self.node = node
        self.options = options
        self.file = file
        self.fd = descriptor.rawValue
        self.descriptor = consume descriptor
    }

    static func open(_ options: FileOptions, node: NodeName, nodes: [NodeName: BlockNode]) throws(BlockError) -> FileDriver {
        var options = options
        let descriptor = try openImage(&options, node: node)
        let image = try FileIO(describing: descriptor.rawValue, options: options, node: node)
        // The early lock check is BlockNode.open's (skipped for an inactive node).
        return FileDriver(node: node, options: options, descriptor: descriptor, file: image)
    }

    /// Opens the image, falling back to read-only with auto-read-only=on (which `options`
    /// then says).
    private static func openImage(_ options: inout FileOptions, node: NodeName) throws(BlockError) -> OwnedFileDescriptor {
        var flags = O_CLOEXEC | (options.readOnly ? O_RDONLY : O_RDWR)
        if options.direct { flags |= O_DIRECT }
        var fd = Glibc.open(options.filename, flags)
        if fd < 0 && options.autoReadOnly && !options.readOnly && [EACCES, EROFS, EPERM].contains(errno) {
            // auto-read-only=on, as QEMU: fall back to a read-only node.
            options.readOnly = true
            fd = Glibc.open(options.filename, (flags & ~O_RDWR) | O_RDONLY)
        }
        guard fd >= 0 else {
            let e = errno
            var hint = ""
            if e == ENOENT { hint = " (create it first, e.g. truncate -s 1G \(options.filename))" }
            if e == EINVAL && options.direct { hint = " (the filesystem may not support O_DIRECT: drop cache.direct=on)" }
            if e == EACCES || e == EROFS { hint = options.readOnly ? "" : " (use read-only=on for a read-only image)" }
            throw BlockError(errno: e, "node '\(node)': cannot open '\(options.filename)': \(String(cString: strerror(e)))\(hint)")
        }
        return OwnedFileDescriptor(adopting: fd)
    }

    var io: any BlockDriverIO { file }
    var children: [BlockNode] { [] }

    func applyPermissions(_ users: [BlockPermissions]) throws(BlockError) {
        guard options.locking, descriptor != nil else { return }
        try lock(fd, for: users)
        lockedFor = users
    }

    /// Takes the image-lock bytes `users` need on `descriptor` (what they hold, what they let
    /// others hold). `checkingConflicts: false` only when moving locks this node already
    /// holds to a new descriptor (FileDriver+Reopen).
    func lock(_ descriptor: Int32, for users: [BlockPermissions], checkingConflicts: Bool = true) throws(BlockError) {
        let held = users.reduce(BlockPermissions()) { $0.union($1) }
        let shared = users.reduce(ImageLock.sharedBits(for: [])) { $0 & ImageLock.sharedBits(for: $1) }
        try ImageLock.apply(fd: descriptor, held: ImageLock.qemuBits(held), shared: shared, path: options.filename,
                            checkingConflicts: checkingConflicts)
    }

    /// Files grow with ftruncate; shrinking a file or resizing a block device is refused
    /// (data would be lost, or the device has its own size).
    func resize(to size: UInt64) throws(BlockError) {
        guard descriptor != nil else { throw BlockError(errno: EBADF, "node '\(node)' is closed") }
        guard file.writable else { throw BlockError(errno: EROFS, "node '\(node)' is read-only; it cannot be resized") }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw BlockError(errno: ENOTSUP, "node '\(node)': only regular image files can be resized")
        }
        guard size >= file.length else {
            throw BlockError(errno: ENOTSUP, "node '\(node)': shrinking an image is not supported (it would drop data past \(size) bytes)")
        }
        guard size <= UInt64(Int64.max), ftruncate(fd, off_t(size)) == 0 else {
            throw BlockError(errno: errno, "node '\(node)': cannot grow '\(options.filename)' to \(size) bytes: \(String(cString: strerror(errno)))")
        }
        file.setLength(size)
    }

    func close() {
        guard let descriptor = descriptor.take() else { return }
        // Whatever the guests left in the page cache reaches the disk before we let go.
        if file.writable && fdatasync(descriptor.rawValue) != 0 {
            Logger(label: "spindle.block").error("node '\(node)': flushing '\(options.filename)' before closing failed: \(String(cString: strerror(errno)))")
        }
        ImageLock.releaseAll(fd: descriptor.rawValue)
        descriptor.close()
    }

    func flushToDisk() throws(BlockError) {
        guard let fd = descriptor?.rawValue, file.writable else { return }
        guard fdatasync(fd) == 0 else {
            let e = errno
            throw BlockError(errno: e, "node '\(node)': cannot flush '\(options.filename)' to disk: \(String(cString: strerror(e)))")
        }
    }

    func refreshLength() -> Bool {
        guard let fd = descriptor?.rawValue else { return false }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            Logger(label: "spindle.block").error("node '\(node)': cannot read the size of '\(options.filename)' again: \(String(cString: strerror(errno))); keeping \(file.length) bytes")
            return false
        }
        var length = UInt64(info.st_size)
        if (info.st_mode & S_IFMT) == S_IFBLK, case let size = spindle_blkdev_size(fd), size >= 0 { length = UInt64(size) }
        guard length != file.length else { return false }
        file.setLength(length)
        return true
    }

    var display: BlockNodeDisplay {
        var shown = BlockNodeDisplay(file: options.filename)
        shown.cacheDirect = options.direct
        shown.cacheNoFlush = options.noFlush
        return shown
    }
}

extension FileIO {
    /// The data path over an open image `fd` (borrowed: the driver closes it): its size and,
    /// with O_DIRECT, the alignment the kernel asks of buffers and offsets.
    convenience init(describing fd: Int32, options: FileOptions, node: NodeName) throws(BlockError) {
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let e = errno
            throw BlockError(errno: e, "node '\(node)': cannot stat '\(options.filename)': \(String(cString: strerror(e)))")
        }
        let isBlockDevice = (info.st_mode & S_IFMT) == S_IFBLK
        guard isBlockDevice || (info.st_mode & S_IFMT) == S_IFREG else {
            throw BlockError(errno: EINVAL, "node '\(node)': '\(options.filename)' is neither a regular file nor a block device")
        }
        var length = UInt64(info.st_size)
        if isBlockDevice, case let size = spindle_blkdev_size(fd), size >= 0 { length = UInt64(size) }
        var memoryAlignment = 1
        var offsetAlignment = 1
        if options.direct {
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
        self.init(fd: fd, length: length, writable: !options.readOnly, direct: options.direct,
                  memoryAlignment: memoryAlignment, offsetAlignment: offsetAlignment,
                  discardUnmaps: options.discardUnmap, ignoresFlush: options.noFlush)
    }
}
