import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Qcow2Format

/// block_resize of a qcow2 node: grow only (QEMU's text for a shrink). On the control
/// thread while every user is drained. Crash-safe order (QEMU's): a larger L1 table is
/// written to fresh clusters (refcounts durable first) and made durable before the header
/// points at it; the header's size, L1 size and L1 offset change in one 24-byte write
/// (inside one sector); the old table's clusters are freed only after that is durable. A
/// crash leaks at most the new table's clusters. The data path is then rebuilt from the
/// image as it is now on disk (its geometry is immutable while requests run), and the
/// graph points the node's users at it.
extension Qcow2Driver {
    func resize(to size: UInt64) throws(BlockError) {
        let old = image
        let oldSize = old.layout.virtualSize
        if size == oldSize { return }
        guard let allocator = old.allocator, !old.isMarkedCorrupt else {
            throw BlockError(errno: EROFS, "Image is read-only")
        }
        guard size > oldSize else {
            throw BlockError(errno: ENOTSUP, "qcow2 doesn't support shrinking images yet")
        }
        guard size % 512 == 0 else { throw BlockError(errno: EINVAL, "The new size must be a multiple of 512") }
        guard size <= Qcow2Header.maximumVirtualSize else {
            throw BlockError(errno: EFBIG, "qcow2 node '\(node)': \(size) bytes is more than a qcow2 image can hold")
        }
        let layout = old.layout
        var grown = layout
        grown.virtualSize = size
        let needed = grown.l2TablesNeeded
        var l1Size = UInt64(layout.l1Size)
        var l1Offset = layout.l1Offset
        var oldTable: (offset: UInt64, clusters: UInt64)?
        if needed > l1Size {
            let bytes = needed * 8
            guard bytes <= Qcow2Header.maximumL1Bytes else {
                throw BlockError(errno: EFBIG, "qcow2 node '\(node)': \(size) bytes needs an L1 table larger than \(Qcow2Header.maximumL1Bytes >> 20) MiB")
            }
            l1Offset = try writeLargerL1(allocator, layout: layout, entries: needed)
            oldTable = (layout.l1Offset, (layout.l1Bytes + layout.clusterSize - 1) >> UInt64(layout.clusterBits))
            l1Size = needed
        }
        // size (u64 at 24), crypt_method (u32, unchanged), l1_size (u32), l1_table_offset (u64).
        var fields = [UInt8]()
        fields.reserveCapacity(24)
        for shift in stride(from: 56, through: 0, by: -8) { fields.append(UInt8(truncatingIfNeeded: size >> UInt64(shift))) }
        for shift in stride(from: 24, through: 0, by: -8) { fields.append(UInt8(truncatingIfNeeded: header.cryptMethod >> UInt32(shift))) }
        for shift in stride(from: 24, through: 0, by: -8) { fields.append(UInt8(truncatingIfNeeded: UInt32(l1Size) >> UInt32(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { fields.append(UInt8(truncatingIfNeeded: l1Offset >> UInt64(shift))) }
        var rc = Qcow2SyncIO.write(old.fd, fields, 24, at: 24)
        if rc == 0 { rc = Qcow2SyncIO.datasync(old.fd) }
        if rc < 0 { throw failure("cannot write the new size into the header", errno: -rc) }
        try rebuildDataPath(from: old)
        if let oldTable, let next = image.allocator, next.releaseForResize(at: oldTable.offset, count: oldTable.clusters) < 0 {
            Qcow2ChainOpening().logger.warning("qcow2 node '\(node)': could not free the old L1 table of '\(filename)'; qemu-img check will report it as leaked (harmless; qemu-img check -r leaks removes it)")
        }
    }

    /// Writes the L1 table, grown to `entries` (new entries unallocated), to fresh clusters
    /// and makes it durable. Returns its offset.
    private func writeLargerL1(_ allocator: Qcow2Allocator, layout: Qcow2Layout, entries: UInt64) throws(BlockError) -> UInt64 {
        let clusters = (entries * 8 + layout.clusterSize - 1) >> UInt64(layout.clusterBits)
        let reader = Qcow2ImageReader(fd: image.fd, fileLength: layout.fileLength, subject: "qcow2 node '\(node)' ('\(filename)')")
        var table = try reader.pread(count: Int(layout.l1Bytes), at: layout.l1Offset, what: "the L1 table")
        table += [UInt8](repeating: 0, count: Int(clusters << UInt64(layout.clusterBits)) - table.count)
        let offset = allocator.claimDurableForResize(clusters)
        guard offset > 0 else { throw failure("cannot allocate \(clusters) clusters for a larger L1 table", errno: Int32(-offset)) }
        var rc = Qcow2SyncIO.write(image.fd, table, table.count, at: UInt64(offset))
        if rc == 0 { rc = Qcow2SyncIO.datasync(image.fd) }
        if rc < 0 { throw failure("cannot write its larger L1 table", errno: -rc) }
        return UInt64(offset)
    }

    /// A new data path (geometry, L1, allocator) read from the image; the L2 cache and the
    /// backing chain are kept (L2 tables do not move). If that fails the old one would write
    /// to a table the header no longer names: it is marked corrupt (writes fail).
    private func rebuildDataPath(from old: Qcow2IO) throws(BlockError) {
        if let allocator = old.allocator, allocator.close() < 0 {
            Qcow2ChainOpening().logger.warning("qcow2 node '\(node)': could not give back the clusters reserved for allocation in '\(filename)'; qemu-img check will report them as leaked")
        }
        let subject = "qcow2 node '\(node)'"
        do throws(BlockError) {
            var stats = stat()
            guard fstat(old.fd, &stats) == 0 else { throw failure("cannot stat its file", errno: errno) }
            let reader = Qcow2ImageReader(fd: old.fd, fileLength: UInt64(stats.st_size), subject: "\(subject) ('\(filename)')")
            let read = try reader.read(readOnly: false)
            let writing = try reader.prepareWriting(read, fileWritable: true)
            let allocator = try reader.makeAllocator(read, writing, chainClusterSize: old.chainClusterSize, subject: subject)
            image = Qcow2IO(layout: read.layout, fd: old.fd, l2TableOffsets: read.l2TableOffsets, cache: old.cache, backing: old.backing,
                            allocator: allocator,
                            reportCorruption: corruptionRelay.reporter(subject: subject, filename: filename, logger: Qcow2ChainOpening().logger))
            header = read.header
        } catch {
            old.markCorrupt()
            throw BlockError(errno: error.errno, "\(error.message) (after its header was updated for the resize: writes now fail; close the node and check the image with qemu-img check)")
        }
    }

    private func failure(_ what: String, errno code: Int32) -> BlockError {
        BlockError(errno: code, "qcow2 node '\(node)': \(what) ('\(filename)'): \(String(cString: strerror(code)))")
    }
}
