import Glibc
import Qcow2Format

/// What an L2 entry means to a write (decoded from the table on disk, under the lock).
enum Qcow2WriteTarget: Equatable {
    /// Data with COPIED: written in place.
    case copied(hostOffset: UInt64)
    /// A preallocated zero cluster (zero flag, an offset, COPIED): its cluster is reused.
    case zeroAllocated(hostOffset: UInt64)
    /// Nothing here yet (unallocated, or a zero flag without a cluster): a new cluster.
    case fresh
    /// Compressed: a new cluster, then the old bytes are released.
    case compressed(hostOffset: UInt64, byteCount: UInt64)
    /// Corrupt, or shared (no COPIED: an internal snapshot's, refused at open).
    case refused

    static func of(_ raw: UInt64, layout: Qcow2Layout) -> Qcow2WriteTarget {
        if raw == 0 || raw == Qcow2Entries.zeroFlag { return .fresh }
        let copied = raw & Qcow2Entries.copiedFlag != 0
        switch layout.check(Qcow2Entries.decodeL2(raw, clusterBits: layout.clusterBits)) {
        case .data(let hostOffset, _):
            return copied ? .copied(hostOffset: hostOffset) : .refused
        case .zero:
            let hostOffset = raw & Qcow2Entries.offsetMask
            if hostOffset == 0 { return .fresh }
            guard copied, !layout.overlapsMetadata(hostOffset, length: layout.clusterSize) else { return .refused }
            return .zeroAllocated(hostOffset: hostOffset)
        case .compressed(let hostOffset, let byteCount):
            return .compressed(hostOffset: hostOffset, byteCount: byteCount)
        case .unallocated:
            return .fresh
        case .corrupt:
            return .refused
        }
    }

    /// The error for a refused entry: -EUCLEAN when the image's own metadata is inconsistent
    /// (a corrupt entry, or a zero cluster's host cluster on the header, L1 or refcount
    /// table): the caller reports it and the image is marked corrupt; -EIO for a shared
    /// cluster (no COPIED), which is not corruption.
    static func refusalCode(_ raw: UInt64, layout: Qcow2Layout) -> Int64 {
        let copied = raw & Qcow2Entries.copiedFlag != 0
        switch layout.check(Qcow2Entries.decodeL2(raw, clusterBits: layout.clusterBits)) {
        case .corrupt: return -Int64(EUCLEAN)
        case .zero: return copied ? -Int64(EUCLEAN) : -Int64(EIO)
        default: return -Int64(EIO)
        }
    }
}

extension Qcow2Allocator {
    /// Writes `request`'s bytes from `done` on where the fast path could not (or zeroes, for
    /// write-zeroes): at least one byte, at most to the end of the L2 table they start in.
    /// A round of its own, synchronously, under the image's allocation lock (the worker's
    /// rounds take it too). Returns the bytes written, or -errno (-EUCLEAN: inconsistent metadata).
    func write(_ io: Qcow2IO, _ request: UnsafeMutablePointer<BlockRequest>, from done: UInt64) -> Int64 {
        withLock {
            round.reset()
            guard plan(io, request, from: done) else { return -Int64(EIO) }  // an empty round has no conflicts
            finishRound(io)
            return round.plans[0].result
        }
    }

    /// Phase one of a round for `request`'s next piece (under the lock): looks at the tables
    /// on disk (another IOThread may have allocated since the caller looked), claims
    /// clusters, writes the data with its fill (and a new L2 table) and notes the entries
    /// to write. false: the piece must wait for the next round (see `Qcow2AllocRound.conflicts`).
    func plan(_ io: Qcow2IO, _ request: UnsafeMutablePointer<BlockRequest>, from done: UInt64) -> Bool {
        let position = request.pointee.offset + done
        let clusterBits = UInt64(layout.clusterBits)
        let clusterSize = layout.clusterSize
        let tableShift = clusterBits + UInt64(layout.l2Bits)
        let l1Index = position >> tableShift
        let offsetInCluster = position & (clusterSize - 1)
        let span = min(request.pointee.length - done, ((l1Index + 1) << tableShift) - position)
        let first = (position >> clusterBits) & ((1 << UInt64(layout.l2Bits)) - 1)
        let clusters = (offsetInCluster + span + clusterSize - 1) >> clusterBits
        if round.plans.count >= Qcow2AllocRound.maximumPlans || round.conflicts(l1Index: l1Index, first: first, count: clusters) {
            return false
        }
        var plan = Qcow2AllocPlan(request: request, l1Index: l1Index, spanFirst: first, spanCount: clusters)
        let tableOffset = l1Index < UInt64(layout.l1Size) ? io.l2TableOffset(l1Index) : Qcow2IO.corruptL1
        if tableOffset == 0 && round.newTables >= Qcow2AllocRound.maximumNewTables { return false }
        plan.tableOffset = tableOffset
        plan.first = first
        plan.result = tableOffset == Qcow2IO.corruptL1 ? -Int64(EIO) : planPiece(io, &plan, from: done, span: span, clusters: clusters)
        round.plans.append(plan)
        return true
    }

    private func planPiece(_ io: Qcow2IO, _ plan: inout Qcow2AllocPlan, from done: UInt64, span: UInt64, clusters: UInt64) -> Int64 {
        let request = plan.request
        let position = request.pointee.offset + done
        let clusterSize = layout.clusterSize
        let offsetInCluster = position & (clusterSize - 1)
        let tableOffset = plan.tableOffset
        // Nothing to free without a table.
        if request.pointee.operation == .discard && tableOffset == 0 { return Int64(span) }
        // Room for the entries the piece spans; for a table not there yet, a whole new table.
        guard let at = round.reserve(tableOffset == 0 ? Int(clusterSize) : Int(clusters) * 8) else { return -Int64(ENOMEM) }
        if tableOffset == 0 {
            memset(round.arena + at, 0, Int(clusterSize))
            plan.entriesAt = at + Int(plan.first) * 8
        } else {
            plan.entriesAt = at
            if Qcow2SyncIO.read(fd, round.arena + at, Int(clusters) * 8, at: tableOffset + plan.first * 8) != Int(clusters) * 8 {
                return -Int64(EIO)
            }
        }
        if request.pointee.operation == .discard {
            return planDiscard(io, &plan, position: position, span: span)
        }
        let inFirstCluster = min(span, clusterSize - offsetInCluster)
        if request.pointee.operation == .writeZeroes && zeroClusters && offsetInCluster == 0 && span >= clusterSize {
            let zeroed = markZero(io, &plan, clusters: span >> UInt64(layout.clusterBits))
            if zeroed != 0 { return zeroed }
        }
        let entries = (round.arena + plan.entriesAt).assumingMemoryBound(to: UInt64.self)
        switch Qcow2WriteTarget.of(UInt64(bigEndian: entries[0]), layout: layout) {
        case .copied(let hostOffset):
            let rc = writeData(request, from: done, count: inFirstCluster, head: 0, tail: 0, at: hostOffset + offsetInCluster)
            return rc < 0 ? Int64(rc) : Int64(inFirstCluster)
        case .zeroAllocated(let hostOffset):
            // The cluster stays; its zero flag goes once the data is durable.
            let rc = fillAndWrite(io, request, from: done, count: inFirstCluster, clusters: 1, at: hostOffset, fillKnownZero: false)
            if rc < 0 { return Int64(rc) }
            round.needsSync = true
            entries[0] = (hostOffset | Qcow2Entries.copiedFlag).bigEndian
            plan.count = 1
            return Int64(inFirstCluster)
        case .compressed(let hostOffset, let byteCount):
            let rc = allocate(io, &plan, from: done, count: inFirstCluster, clusters: 1, fillIsZero: false)
            if rc < 0 { return Int64(rc) }
            round.releases.append(Qcow2AllocRelease(hostOffset: hostOffset, byteCount: byteCount, punch: false, plan: round.plans.count))
            return Int64(inFirstCluster)
        case .fresh:
            var run: UInt64 = 1
            while run < clusters && Qcow2WriteTarget.of(UInt64(bigEndian: entries[Int(run)]), layout: layout) == .fresh { run += 1 }
            let count = min(span, run * clusterSize - offsetInCluster)
            let noBacking: Bool
            if case .none = io.backing { noBacking = true } else { noBacking = false }
            let rc = allocate(io, &plan, from: done, count: count, clusters: run, fillIsZero: noBacking)
            return rc < 0 ? Int64(rc) : Int64(count)
        case .refused:
            return Qcow2WriteTarget.refusalCode(UInt64(bigEndian: entries[0]), layout: layout)
        }
    }

    /// New clusters for `clusters` entries from the plan's first (and a new L2 table if the
    /// L1 entry has none), in QEMU's order: refcounts, data with its fill and the new table
    /// written now; the round's fdatasync; then the entries (or the L1 entry) that point at
    /// them (`finishRound`). The data clusters' refcounts come durable from the reservation.
    /// When the fill is all zeroes (no backing file) the fill is not written and no fdatasync
    /// is needed for the data: the clusters were never written (past the file's end at open,
    /// never reused), so they read zeroes, and an entry that reaches the disk before its data
    /// shows zeroes, what the guest saw there before its unflushed write.
    private func allocate(_ io: Qcow2IO, _ plan: inout Qcow2AllocPlan, from done: UInt64, count: UInt64, clusters: UInt64,
                          fillIsZero: Bool) -> Int32 {
        let clusterBits = UInt64(layout.clusterBits)
        if plan.tableOffset == 0 {
            let claimed = claim(1)
            if claimed < 0 { return Int32(claimed) }
            plan.tableOffset = UInt64(claimed) << clusterBits
            plan.tableAt = plan.entriesAt - Int(plan.first) * 8
            round.newTables += 1
        }
        let claimed = claimDurable(clusters)
        if claimed < 0 { return Int32(claimed) }
        let data = UInt64(claimed) << clusterBits
        var rc = fillAndWrite(io, plan.request, from: done, count: count, clusters: clusters, at: data, fillKnownZero: fillIsZero)
        if rc < 0 { return rc }
        let entries = (round.arena + plan.entriesAt).assumingMemoryBound(to: UInt64.self)
        for i in 0..<Int(clusters) {
            entries[i] = ((data + (UInt64(i) << clusterBits)) | Qcow2Entries.copiedFlag).bigEndian
        }
        plan.count = clusters
        if plan.tableAt >= 0 {
            rc = Qcow2SyncIO.write(fd, round.arena + plan.tableAt, Int(layout.clusterSize), at: plan.tableOffset)
            if rc < 0 { return rc }
            round.needsSync = true
        }
        if !fillIsZero { round.needsSync = true }
        return 0
    }

    /// Writes `clusters` whole clusters at `hostOffset`: the guest's `count` bytes (zeroes
    /// for write-zeroes) with the image's current contents around them (from the backing
    /// chain for unallocated clusters), in one pwritev.
    /// `fillKnownZero`: the clusters read zeroes already (fresh, no backing file): only the
    /// request's bytes are written.
    private func fillAndWrite(_ io: Qcow2IO, _ request: UnsafeMutablePointer<BlockRequest>, from done: UInt64, count: UInt64,
                              clusters: UInt64, at hostOffset: UInt64, fillKnownZero: Bool) -> Int32 {
        let position = request.pointee.offset + done
        let head = position & (layout.clusterSize - 1)
        if fillKnownZero { return writeData(request, from: done, count: count, head: 0, tail: 0, at: hostOffset + head) }
        let tail = clusters * layout.clusterSize - head - count
        if head > 0 {
            let rc = io.readSync(position - head, count: Int(head), into: fill, scratch: inflateScratch)
            if rc < 0 { return rc }
        }
        if tail > 0 {
            let rc = io.readSync(position + count, count: Int(tail), into: fill + Int(layout.clusterSize), scratch: inflateScratch)
            if rc < 0 { return rc }
        }
        return writeData(request, from: done, count: count, head: head, tail: tail, at: hostOffset)
    }

    /// One pwritev of [fill head, the request's bytes, fill tail] at `hostOffset`.
    private func writeData(_ request: UnsafeMutablePointer<BlockRequest>, from done: UInt64, count: UInt64, head: UInt64, tail: UInt64,
                           at hostOffset: UInt64) -> Int32 {
        let zeroWrite = request.pointee.operation == .writeZeroes
        let clusterSize = Int(layout.clusterSize)
        let needed = Int(request.pointee.iovcnt) + 2 + (zeroWrite ? Int(count) / clusterSize + 1 : 0)
        if needed > iovCapacity {
            iov.deallocate()
            iovCapacity = needed
            iov = .allocate(capacity: needed)
        }
        var used = 0
        if head > 0 {
            iov[used] = iovec(iov_base: fill, iov_len: Int(head))
            used += 1
        }
        if zeroWrite {
            var left = Int(count)
            while left > 0 {
                iov[used] = iovec(iov_base: zeroes, iov_len: min(left, clusterSize))
                left -= min(left, clusterSize)
                used += 1
            }
        } else {
            var covered: UInt64 = 0
            Qcow2Pieces.forEachSpan(request, from: done, count: count) { base, length in
                iov[used] = iovec(iov_base: base, iov_len: length)
                used += 1
                covered += UInt64(length)
            }
            guard covered == count else { return -EINVAL }  // fewer buffer bytes than the request says
        }
        if tail > 0 {
            iov[used] = iovec(iov_base: fill + clusterSize, iov_len: Int(tail))
            used += 1
        }
        return Qcow2SyncIO.writev(fd, iov, used, total: Int(head + count + tail), at: hostOffset)
    }
}
