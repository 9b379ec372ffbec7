import CQcow2Zlib
import Glibc
import Qcow2Format

/// What block-stream needs of a qcow2 layer, on the job's own thread (never an IOThread):
/// blocking reads of the tables on disk, and copies into clusters that are still
/// unallocated, decided under the image's allocation lock.
extension Qcow2IO {
    /// Bytes of scratch `readBackingSync` needs: two of the chain's clusters and zlib's arena.
    public var syncReadScratchBytes: Int { chainClusterSize * 2 + Int(SPINDLE_QCOW2_INFLATE_ARENA) }

    /// Whether any cluster of this layer overlapping guest bytes [offset, offset+length) is
    /// allocated in this layer's own tables (data, zero flag or compressed: anything that
    /// hides the layers below). nil: the tables could not be read or are corrupt.
    public func isAllocatedHere(_ offset: UInt64, length: UInt64) -> Bool? {
        guard offset < layout.virtualSize, length > 0 else { return false }
        let end = min(layout.virtualSize, offset + length)
        let clusterBits = UInt64(layout.clusterBits)
        var cluster = offset >> clusterBits
        while cluster << clusterBits < end {
            let l1Index = cluster >> UInt64(layout.l2Bits)
            let tableOffset = l2TableOffset(l1Index)
            if tableOffset == Self.corruptL1 { return nil }
            if tableOffset != 0 {
                let index = cluster & ((1 << UInt64(layout.l2Bits)) - 1)
                var raw: UInt64 = 0
                guard Qcow2SyncIO.read(fd, &raw, 8, at: tableOffset + index * 8) == 8 else { return nil }
                if raw != 0 { return true }
            }
            cluster += 1
        }
        return false
    }

    /// Reads guest bytes [offset, offset+count) of this layer's backing chain (zeroes where
    /// it has none) with blocking reads. Returns 0 or -errno.
    public func readBackingSync(_ offset: UInt64, count: Int, into buffer: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer) -> Int32 {
        backing.readSync(offset, count: count, into: buffer, scratch: scratch)
    }
}

extension Qcow2Allocator {
    /// Writes `data` (whole clusters) into those of the `clusters` clusters from guest offset
    /// `offset` that are still unallocated in the image (L2 entry 0), as new clusters, and
    /// leaves every other one alone: a guest write that got there first wins. Offset cluster
    /// aligned, the clusters inside one L2 table. Under the image's allocation lock, from the
    /// tables on disk, in the allocation path's order: refcounts durable, data (and a new L2
    /// table) written, fdatasync, then the entries. Returns the bytes written or -errno.
    public func fillUnallocated(_ io: Qcow2IO, offset: UInt64, clusters: Int, data: UnsafeRawPointer) -> Int64 {
        // The job's own table buffer (the allocation worker keeps its scratch to itself).
        let tableScratch = UnsafeMutableRawPointer.allocate(byteCount: Int(layout.clusterSize), alignment: 4096)
        defer { tableScratch.deallocate() }
        return withLock { fillUnallocatedLocked(io, offset: offset, clusters: clusters, data: data, tableScratch: tableScratch) }
    }

    private func fillUnallocatedLocked(_ io: Qcow2IO, offset: UInt64, clusters: Int, data: UnsafeRawPointer,
                                       tableScratch: UnsafeMutableRawPointer) -> Int64 {
        let clusterBits = UInt64(layout.clusterBits)
        let clusterSize = Int(layout.clusterSize)
        let l2Entries = 1 << Int(layout.l2Bits)
        let l1Index = offset >> (clusterBits + UInt64(layout.l2Bits))
        let first = Int((offset >> clusterBits) & UInt64(l2Entries - 1))
        guard clusters > 0, offset & (layout.clusterSize - 1) == 0, l1Index < UInt64(layout.l1Size), first + clusters <= l2Entries else {
            return -Int64(EINVAL)
        }
        let tableOffset = io.l2TableOffset(l1Index)
        if tableOffset == Qcow2IO.corruptL1 { return -Int64(EIO) }
        let entries = (tableScratch + first * 8).assumingMemoryBound(to: UInt64.self)
        var newTable: UInt64 = 0
        if tableOffset == 0 {
            memset(tableScratch, 0, clusterSize)
        } else if Qcow2SyncIO.read(fd, entries, clusters * 8, at: tableOffset + UInt64(first) * 8) != clusters * 8 {
            return -Int64(EIO)
        }
        guard (0..<clusters).contains(where: { entries[$0] == 0 }) else { return 0 }
        if tableOffset == 0 {
            let claimed = claim(1)
            if claimed < 0 { return claimed }
            newTable = UInt64(claimed) << clusterBits
        }
        var written: Int64 = 0
        var index = 0
        while index < clusters {
            guard entries[index] == 0 else {
                index += 1
                continue
            }
            var run = 1
            while index + run < clusters && entries[index + run] == 0 { run += 1 }
            let claimed = claimDurable(UInt64(run))
            if claimed < 0 { return claimed }
            let host = UInt64(claimed) << clusterBits
            let rc = Qcow2SyncIO.write(fd, data + index * clusterSize, run * clusterSize, at: host)
            if rc < 0 { return Int64(rc) }
            for i in 0..<run { entries[index + i] = ((host + (UInt64(i) << clusterBits)) | Qcow2Entries.copiedFlag).bigEndian }
            written += Int64(run * clusterSize)
            index += run
        }
        var rc: Int32 = 0
        if newTable != 0 { rc = Qcow2SyncIO.write(fd, tableScratch, clusterSize, at: newTable) }
        if rc == 0 { rc = Qcow2SyncIO.datasync(fd) }
        if rc < 0 { return Int64(rc) }
        if newTable != 0 {
            rc = Qcow2SyncIO.writeBigEndian(fd, newTable | Qcow2Entries.copiedFlag, at: layout.l1Offset + l1Index * 8)
            if rc == 0 { io.setL2TableOffset(l1Index, newTable) }
            return rc < 0 ? Int64(rc) : written
        }
        // Entries that were allocated are written back as read (nobody changes them while
        // the lock is held).
        rc = Qcow2SyncIO.write(fd, entries, clusters * 8, at: tableOffset + UInt64(first) * 8)
        if rc < 0 { return Int64(rc) }
        io.cache.update(l1Index: l1Index, first: first, count: clusters, from: entries)
        return written
    }
}
