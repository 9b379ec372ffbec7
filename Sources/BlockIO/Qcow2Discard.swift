import Glibc
import Qcow2Format

extension Qcow2Allocator {
    /// A discard's piece on a version 3 image (version 2 images never get here: their
    /// discards stay advisory). The whole clusters of the piece that hold data lose it: their
    /// entries become unallocated (no backing file) or zero clusters (so that the backing
    /// file's data does not show through again, as QEMU does), written after the round's
    /// fdatasync; their clusters are freed (refcount decremented, space punched out of the
    /// file) only once those entries are durable (`finishRound`). Partial clusters at the
    /// ends are left as they are (a discard is a hint). Returns the piece's bytes or -errno.
    ///
    /// A freed cluster is never handed out again while the image is open: new clusters come
    /// only from the end of the file (`nextCluster` moves forward only), so a read or a fast-
    /// path write still in flight to it (one that raced the discard of its own range) cannot
    /// meet another guest range's data; the next open sees it free (qemu-img check: no leak).
    func planDiscard(_ io: Qcow2IO, _ plan: inout Qcow2AllocPlan, position: UInt64, span: UInt64) -> Int64 {
        let whole = Qcow2AllocBatching.wholeClusters(position: position, length: span, clusterBits: layout.clusterBits)
        if whole.isEmpty || plan.tableOffset == 0 { return Int64(span) }
        let skip = whole.lowerBound - (position >> UInt64(layout.clusterBits))
        plan.entriesAt += Int(skip) * 8
        plan.first += skip
        let entries = (round.arena + plan.entriesAt).assumingMemoryBound(to: UInt64.self)
        let hasBacking: Bool
        if case .none = io.backing { hasBacking = false } else { hasBacking = true }
        let cleared = hasBacking ? Qcow2Entries.zeroFlag : 0
        for i in 0..<whole.count where Qcow2WriteTarget.of(UInt64(bigEndian: entries[i]), layout: layout) == .refused {
            return -Int64(EIO)
        }
        var changed = false
        for i in 0..<whole.count {
            switch Qcow2WriteTarget.of(UInt64(bigEndian: entries[i]), layout: layout) {
            case .copied(let hostOffset), .zeroAllocated(let hostOffset):
                round.releases.append(Qcow2AllocRelease(hostOffset: hostOffset, byteCount: layout.clusterSize, punch: true,
                                                        plan: round.plans.count))
            case .compressed(let hostOffset, let byteCount):
                round.releases.append(Qcow2AllocRelease(hostOffset: hostOffset, byteCount: byteCount, punch: false, plan: round.plans.count))
            case .fresh, .refused:
                continue
            }
            entries[i] = cleared.bigEndian
            changed = true
        }
        plan.count = changed ? UInt64(whole.count) : 0
        return Int64(span)
    }
}
