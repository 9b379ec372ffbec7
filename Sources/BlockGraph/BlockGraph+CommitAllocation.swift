import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Qcow2Format

/// What a commit copies: every guest range a layer above its base allocates (data,
/// compressed or zero clusters: a zero cluster hides the base's data, so the base must get
/// zeroes there). Read with pread from the images' files on the control thread, once, when
/// the job starts; writes after that are marked by the job's filter.
extension BlockGraph {
    public func markAllocated(in layers: [BlockNode], bitmap: DirtyBitmap) throws(BlockError) {
        ControlActor.preconditionOnControlThread("markAllocated")
        for layer in layers {
            guard let io = layer.io as? Qcow2IO else {
                bitmap.markAll()  // not an image format: all of it is its own data
                continue
            }
            try markAllocated(io, node: layer.name, bitmap: bitmap)
        }
    }

    private func markAllocated(_ io: Qcow2IO, node: NodeName, bitmap: DirtyBitmap) throws(BlockError) {
        var info = stat()
        guard fstat(io.fd, &info) == 0 else {
            throw BlockError(errno: errno, "qcow2 node '\(node)': cannot stat its image: \(String(cString: strerror(errno)))")
        }
        let reader = Qcow2ImageReader(fd: io.fd, fileLength: UInt64(info.st_size), subject: "qcow2 node '\(node)'")
        let image = try reader.read(readOnly: true)
        let layout = image.layout
        let clusterSize = layout.clusterSize
        for (l1Index, tableOffset) in image.l2TableOffsets.enumerated() where tableOffset != 0 {
            let tableStart = UInt64(l1Index) * layout.bytesPerL2Table
            guard tableStart < layout.virtualSize else { break }
            guard tableOffset != Qcow2IO.corruptL1 else {
                // Copying it will fail on the same corruption and end the job with the error.
                bitmap.markDirty(offset: tableStart, length: layout.bytesPerL2Table)
                continue
            }
            let table = try reader.pread(count: Int(clusterSize), at: tableOffset, what: "the L2 table at \(tableOffset)")
            for entry in 0..<Int(clusterSize / 8) {
                var raw: UInt64 = 0
                for byte in 0..<8 { raw = raw << 8 | UInt64(table[entry * 8 + byte]) }
                if raw == 0 { continue }
                if case .unallocated = Qcow2Entries.decodeL2(raw, clusterBits: layout.clusterBits) { continue }
                let guestOffset = tableStart + UInt64(entry) * clusterSize
                guard guestOffset < layout.virtualSize else { break }
                bitmap.markDirty(offset: guestOffset, length: clusterSize)
            }
        }
    }
}
