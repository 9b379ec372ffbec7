import Glibc
import Qcow2Format

extension Qcow2Allocator {
    /// Write-zeroes of whole clusters on a version 3 image: the zero flag instead of zeroes
    /// written. A cluster with data keeps it (offset, COPIED and the zero flag: QEMU's
    /// preallocated zero cluster, reused by the next write), so nothing is freed and nothing
    /// leaks; a compressed cluster's bytes are released once the new entry is durable.
    /// Under the lock. Returns the bytes done (0: not done here, write zeroes instead) or -errno.
    func markZero(_ io: Qcow2IO, l1Index: UInt64, tableOffset: UInt64, first: UInt64, clusters: UInt64) -> Int64 {
        let clusterBits = UInt64(layout.clusterBits)
        if tableOffset == 0 {
            // No table: unallocated already, which reads zeroes only without a backing file.
            if case .none = io.backing { return Int64(clusters << clusterBits) }
            return 0
        }
        let entries = (tableScratch + Int(first) * 8).assumingMemoryBound(to: UInt64.self)
        var released: [(hostOffset: UInt64, byteCount: UInt64)] = []
        for i in 0..<Int(clusters) {
            let raw = UInt64(bigEndian: entries[i])
            switch Qcow2WriteTarget.of(raw, layout: layout) {
            case .copied(let hostOffset), .zeroAllocated(let hostOffset):
                entries[i] = (hostOffset | Qcow2Entries.copiedFlag | Qcow2Entries.zeroFlag).bigEndian
            case .fresh:
                entries[i] = Qcow2Entries.zeroFlag.bigEndian
            case .compressed(let hostOffset, let byteCount):
                entries[i] = Qcow2Entries.zeroFlag.bigEndian
                released.append((hostOffset, byteCount))
            case .refused:
                return -Int64(EIO)
            }
        }
        var rc = Qcow2SyncIO.write(fd, entries, Int(clusters) * 8, at: tableOffset + first * 8)
        if rc < 0 { return Int64(rc) }
        io.cache.update(l1Index: l1Index, first: Int(first), count: Int(clusters), from: entries)
        if !released.isEmpty { rc = Qcow2SyncIO.datasync(fd) }
        for (hostOffset, byteCount) in released where rc == 0 {
            let firstCluster = hostOffset >> clusterBits
            let lastCluster = (hostOffset + max(byteCount, 1) - 1) >> clusterBits
            for cluster in firstCluster...lastCluster where rc == 0 { rc = release(cluster) }
        }
        return rc < 0 ? Int64(rc) : Int64(clusters << clusterBits)
    }
}
