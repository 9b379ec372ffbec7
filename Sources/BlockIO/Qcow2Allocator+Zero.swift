import Glibc
import Qcow2Format

extension Qcow2Allocator {
    /// Write-zeroes of whole clusters on a version 3 image: the zero flag instead of zeroes
    /// written. Without `mayUnmap` a cluster with data keeps it (offset, COPIED and the zero
    /// flag: QEMU's preallocated zero cluster, reused by the next write); with it the cluster
    /// is let go (a plain zero flag) and freed once the new entry is durable, as is a
    /// compressed cluster's bytes (`finishRound`). Plans the entries into the round (they
    /// are written after its fdatasync). Returns the bytes done (0: not done here, write
    /// zeroes instead) or -errno.
    func markZero(_ io: Qcow2IO, _ plan: inout Qcow2AllocPlan, clusters: UInt64) -> Int64 {
        let clusterBits = UInt64(layout.clusterBits)
        if plan.tableOffset == 0 {
            // No table: unallocated already, which reads zeroes only without a backing file.
            if case .none = io.backing { return Int64(clusters << clusterBits) }
            return 0
        }
        let unmap = plan.request.pointee.mayUnmap
        let entries = (round.arena + plan.entriesAt).assumingMemoryBound(to: UInt64.self)
        // Checked first: a refused entry leaves the round's releases untouched.
        for i in 0..<Int(clusters) where Qcow2WriteTarget.of(UInt64(bigEndian: entries[i]), layout: layout) == .refused {
            return Qcow2WriteTarget.refusalCode(UInt64(bigEndian: entries[i]), layout: layout)
        }
        for i in 0..<Int(clusters) {
            switch Qcow2WriteTarget.of(UInt64(bigEndian: entries[i]), layout: layout) {
            case .copied(let hostOffset), .zeroAllocated(let hostOffset):
                if unmap {
                    entries[i] = Qcow2Entries.zeroFlag.bigEndian
                    round.releases.append(Qcow2AllocRelease(hostOffset: hostOffset, byteCount: layout.clusterSize, punch: true,
                                                            plan: round.plans.count))
                } else {
                    entries[i] = (hostOffset | Qcow2Entries.copiedFlag | Qcow2Entries.zeroFlag).bigEndian
                }
            case .fresh:
                entries[i] = Qcow2Entries.zeroFlag.bigEndian
            case .compressed(let hostOffset, let byteCount):
                entries[i] = Qcow2Entries.zeroFlag.bigEndian
                round.releases.append(Qcow2AllocRelease(hostOffset: hostOffset, byteCount: byteCount, punch: false, plan: round.plans.count))
            case .refused:
                return -Int64(EIO)
            }
        }
        plan.count = clusters
        return Int64(clusters << clusterBits)
    }
}
