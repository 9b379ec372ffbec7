import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging

/// A file image opened again in another mode, not yet in use: `FileDriver.prepareReopen`
/// makes it, `commitReopen` puts it in place; dropped, it is closed (nothing changed).
struct PreparedFileReopen: ~Copyable {
    var descriptor: OwnedFileDescriptor
    /// The mode it was opened in (auto-read-only=on may have fallen back to read-only).
    let readOnly: Bool
}

/// Reopening an image file read-only or read-write (GS, while every user reading through
/// it is drained). A new descriptor is opened in the new mode and takes over the old one's
/// number with dup3: FileIO, a qcow2 data path and its allocator borrow that number and
/// need no change. Two steps, so that a qcow2 node above can run everything that may fail
/// before anything changes.
extension FileDriver {
    /// Opens the image again for `readOnly`; nothing changes yet. Going read-write is
    /// refused if another process keeps writers out of the image (its lock).
    func prepareReopen(readOnly: Bool) throws(BlockError) -> PreparedFileReopen {
        guard isOpen else { throw BlockError(errno: EBADF, "node '\(node)' is closed") }
        var flags = O_CLOEXEC | (readOnly ? O_RDONLY : O_RDWR)
        if options.direct { flags |= O_DIRECT }
        var opened = Glibc.open(options.filename, flags)
        var mode = readOnly
        if opened < 0 && !readOnly && options.autoReadOnly && [EACCES, EROFS, EPERM].contains(errno) {
            mode = true  // auto-read-only=on, as at open: stay read-only
            opened = Glibc.open(options.filename, (flags & ~O_RDWR) | O_RDONLY)
        }
        guard opened >= 0 else {
            let e = errno
            let hint = readOnly ? "" : " (the file or its filesystem may be read-only)"
            throw BlockError(errno: e, "Could not reopen file: \(String(cString: strerror(e))) (node '\(node)', '\(options.filename)'\(hint))")
        }
        let prepared = PreparedFileReopen(descriptor: OwnedFileDescriptor(adopting: opened), readOnly: mode)
        var before = stat()
        var now = stat()
        guard fstat(fd, &before) == 0, fstat(opened, &now) == 0, before.st_dev == now.st_dev, before.st_ino == now.st_ino else {
            throw BlockError(errno: ESTALE, "node '\(node)': '\(options.filename)' is no longer the file the node opened (renamed or replaced); reopen refused: delete the node and add it again")
        }
        // Asked through the old descriptor, whose own locks do not count.
        if !mode && options.locking && ImageLock.othersRefuseWriters(fd: fd) {
            throw ImageLock.writeLockError(path: options.filename)
        }
        return prepared
    }

    /// Puts a prepared descriptor in place: the locks the users hold move to it (the old one
    /// holds the same bytes, so nobody else can hold conflicting ones), it takes the old
    /// number (the old description closes, releasing its locks), and the data path's mode
    /// follows. A read-write image is flushed first by the caller.
    func commitReopen(_ prepared: consuming PreparedFileReopen) throws(BlockError) {
        let newFD = prepared.descriptor.rawValue
        let readOnly = prepared.readOnly
        if options.locking && !lockedFor.isEmpty {
            try lock(newFD, for: lockedFor, checkingConflicts: false)
        }
        while dup3(newFD, fd, O_CLOEXEC) < 0 {
            let e = errno
            guard e == EINTR || e == EBUSY else {
                throw BlockError(errno: e, "node '\(node)': cannot put the reopened '\(options.filename)' in place: \(String(cString: strerror(e)))")
            }
        }
        let descriptor = prepared.descriptor
        descriptor.close()  // its number only: the description lives on under `fd`
        file.setWritable(!readOnly)
        options.readOnly = readOnly
    }

    /// Reopens at once (a file node of its own, or a qcow2 image's file in one step).
    func reopen(readOnly: Bool) throws(BlockError) {
        let prepared = try prepareReopen(readOnly: readOnly)
        if readOnly { try flushToDisk() }
        try commitReopen(prepared)
    }
}
