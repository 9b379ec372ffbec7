import BlockCommon
import BlockIO
import Glibc
import Qcow2Format

/// What a read-write open checks and prepares beyond a read-only one.
extension Qcow2ImageReader {
    struct Writing {
        /// Refcount block offsets by table index (0: none).
        var refcountTable: [UInt64]
    }

    /// Refuses what the write path does not handle (internal snapshots, a read-only file, a
    /// corrupt refcount table), reads the refcount table, and clears the autoclear feature
    /// bits before the first write (QEMU's rule: whoever does not maintain those features,
    /// such as persistent bitmaps, must clear them so that QEMU will not trust stale ones).
    func prepareWriting(_ image: Image, fileWritable: Bool) throws(BlockError) -> Writing {
        let header = image.header
        guard fileWritable else {
            throw error("its file is opened read-only; open the file read-write or the qcow2 node with read-only=on", errno: EROFS)
        }
        if header.snapshotCount > 0 {
            throw error("the image has \(header.snapshotCount) internal snapshot\(header.snapshotCount == 1 ? "" : "s"); writing to images with internal snapshots is not supported (open it with read-only=on, or delete them with qemu-img snapshot -d)", errno: ENOTSUP)
        }
        let layout = image.layout
        let bytes = try pread(count: Int(layout.refcountTableBytes), at: layout.refcountTableOffset, what: "the refcount table")
        var table = [UInt64](repeating: 0, count: bytes.count / 8)
        for index in 0..<table.count {
            var raw: UInt64 = 0
            for byte in 0..<8 { raw = raw << 8 | UInt64(bytes[index * 8 + byte]) }
            guard let offset = Qcow2Entries.refcountBlockOffset(raw, clusterBits: layout.clusterBits),
                  offset == 0 || layout.checkL2Table(offset) == nil else {
                throw error("refcount table entry \(index) (0x\(String(raw, radix: 16))) is corrupt; open it with read-only=on or repair it with qemu-img check -r all")
            }
            table[index] = offset
        }
        if header.version >= 3 && header.autoclearFeatures != 0 {
            var zero: UInt64 = 0
            guard Glibc.pwrite(fd, &zero, 8, 88) == 8, fdatasync(fd) == 0 else {
                let e = errno
                throw error("cannot clear the autoclear feature bits in the header: \(String(cString: strerror(e)))", errno: e)
            }
        }
        return Writing(refcountTable: table)
    }

    /// The write path's allocator for the image just read and prepared (open, resize,
    /// reopen read-write), on this reader's descriptor.
    func makeAllocator(_ image: Image, _ writing: Writing, chainClusterSize: Int, subject: String) throws(BlockError) -> Qcow2Allocator {
        guard let allocator = Qcow2Allocator(fd: fd, layout: image.layout, version: image.header.version, refcountOrder: image.header.refcountOrder,
                                             refcountTable: writing.refcountTable, chainClusterSize: chainClusterSize) else {
            throw BlockError(errno: ENOMEM, "\(subject): cannot allocate the buffers of its write path")
        }
        return allocator
    }
}
