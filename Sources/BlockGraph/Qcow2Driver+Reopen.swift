import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Qcow2Format

/// The image's side of a reopen (GS, while every user reading through the node is drained;
/// its file is reopened by BlockGraph+Reopen). The data path object stays: only its
/// allocator comes or goes, so overlays, filters and jobs holding it need no change.
extension Qcow2Driver {
    /// The file's driver, whether a node of the graph or owned by this node.
    var fileDriver: FileDriver? {
        switch file {
        case .node(let node): return node.driver as? FileDriver
        case .owned(let driver): return driver as? FileDriver
        }
    }

    /// Going read-write: the checks and preparation of a read-write open (dirty and corrupt
    /// bits, internal snapshots, the refcount table, autoclear bits cleared), on the image as
    /// it is on disk now, which must still be the image the data path serves. Returns the
    /// allocator; the file must be writable already. Nothing in the data path changes yet.
    func prepareWritable() throws(BlockError) -> Qcow2Allocator {
        let subject = "qcow2 node '\(node)'"
        guard !image.isMarkedCorrupt else {
            throw BlockError(errno: EROFS, "\(subject): the image was marked corrupt; it stays read-only (check it with qemu-img check -r all, then add the node again)")
        }
        var info = stat()
        guard fstat(image.fd, &info) == 0 else {
            throw BlockError(errno: errno, "\(subject): cannot stat '\(filename)': \(String(cString: strerror(errno)))")
        }
        let reader = Qcow2ImageReader(fd: image.fd, fileLength: UInt64(info.st_size), subject: "\(subject) ('\(filename)')")
        let read = try reader.read(readOnly: false)
        var expected = image.layout
        expected.fileLength = read.layout.fileLength
        let sameTables = read.l2TableOffsets.indices.allSatisfy { read.l2TableOffsets[$0] == image.l2TableOffset(UInt64($0)) }
        guard read.layout == expected, sameTables else {
            throw BlockError(errno: ESTALE, "\(subject): '\(filename)' changed on disk since the node opened it (another program wrote it); reopen refused: delete the node and add it again")
        }
        let writing = try reader.prepareWriting(read, fileWritable: true)
        let allocator = try reader.makeAllocator(read, writing, chainClusterSize: image.chainClusterSize, subject: subject)
        header = read.header
        return allocator
    }

    /// Going read-only: metadata and data durable, the clusters reserved for allocation
    /// given back (qemu-img check then finds no leak), the write path gone. Throws, with
    /// nothing changed, only if the flush fails.
    func dropWritePath() throws(BlockError) {
        try flushToDisk()
        guard let allocator = image.allocator else { return }
        if allocator.close() < 0 {
            Qcow2ChainOpening().logger.warning("qcow2 node '\(node)': could not give back the clusters reserved for allocation in '\(filename)'; qemu-img check will report them as leaked (harmless; qemu-img check -r leaks removes them)")
        }
        image.replaceAllocator(nil)
    }
}
