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
}

extension Qcow2Allocator {
    /// Writes `request`'s bytes from `done` on where the fast path could not (or zeroes, for
    /// write-zeroes): at least one byte, at most to the end of the L2 table they start in.
    /// Under the image's allocation lock, from the tables on disk (another IOThread may
    /// have allocated since the caller looked). Returns the bytes written, or -errno.
    func write(_ io: Qcow2IO, _ request: UnsafeMutablePointer<BlockRequest>, from done: UInt64) -> Int64 {
        let written = withLock { writeLocked(io, request, from: done) }
        if written > 0 && request.pointee.fua {
            let rc = Qcow2SyncIO.datasync(fd)
            if rc < 0 { return Int64(rc) }
        }
        return written
    }

    private func writeLocked(_ io: Qcow2IO, _ request: UnsafeMutablePointer<BlockRequest>, from done: UInt64) -> Int64 {
        let position = request.pointee.offset + done
        let clusterBits = UInt64(layout.clusterBits)
        let clusterSize = layout.clusterSize
        let tableShift = clusterBits + UInt64(layout.l2Bits)
        let l1Index = position >> tableShift
        guard l1Index < UInt64(layout.l1Size) else { return -Int64(EIO) }
        let tableOffset = io.l2TableOffset(l1Index)
        if tableOffset == Qcow2IO.corruptL1 { return -Int64(EIO) }
        let offsetInCluster = position & (clusterSize - 1)
        let span = min(request.pointee.length - done, ((l1Index + 1) << tableShift) - position)
        let first = (position >> clusterBits) & ((1 << UInt64(layout.l2Bits)) - 1)
        let clusters = (offsetInCluster + span + clusterSize - 1) >> clusterBits
        let entries = (tableScratch + Int(first) * 8).assumingMemoryBound(to: UInt64.self)
        if tableOffset == 0 {
            memset(tableScratch, 0, Int(clusterSize))
        } else if Qcow2SyncIO.read(fd, entries, Int(clusters) * 8, at: tableOffset + first * 8) != Int(clusters) * 8 {
            return -Int64(EIO)
        }
        let inFirstCluster = min(span, clusterSize - offsetInCluster)
        if request.pointee.operation == .writeZeroes && zeroClusters && offsetInCluster == 0 && span >= clusterSize {
            let zeroed = markZero(io, l1Index: l1Index, tableOffset: tableOffset, first: first, clusters: span >> clusterBits)
            if zeroed != 0 { return zeroed }
        }
        switch Qcow2WriteTarget.of(UInt64(bigEndian: entries[0]), layout: layout) {
        case .copied(let hostOffset):
            let rc = writeData(request, from: done, count: inFirstCluster, head: 0, tail: 0, at: hostOffset + offsetInCluster)
            return rc < 0 ? Int64(rc) : Int64(inFirstCluster)
        case .zeroAllocated(let hostOffset):
            // The cluster stays; its zero flag goes once the data is durable.
            var rc = fillAndWrite(io, request, from: done, count: inFirstCluster, clusters: 1, at: hostOffset)
            if rc == 0 { rc = Qcow2SyncIO.datasync(fd) }
            entries[0] = (hostOffset | Qcow2Entries.copiedFlag).bigEndian
            if rc == 0 { rc = Qcow2SyncIO.write(fd, entries, 8, at: tableOffset + first * 8) }
            if rc < 0 { return Int64(rc) }
            io.cache.update(l1Index: l1Index, first: Int(first), count: 1, from: entries)
            return Int64(inFirstCluster)
        case .compressed(let hostOffset, let byteCount):
            let rc = allocate(io, request, from: done, count: inFirstCluster, clusters: 1, l1Index: l1Index,
                              tableOffset: tableOffset, first: first, fillIsZero: false)
            if rc < 0 { return Int64(rc) }
            return releaseCompressed(hostOffset: hostOffset, byteCount: byteCount) < 0 ? -Int64(EIO) : Int64(inFirstCluster)
        case .fresh:
            var run: UInt64 = 1
            while run < clusters && Qcow2WriteTarget.of(UInt64(bigEndian: entries[Int(run)]), layout: layout) == .fresh { run += 1 }
            let count = min(span, run * clusterSize - offsetInCluster)
            let noBacking: Bool
            if case .none = io.backing { noBacking = true } else { noBacking = false }
            let rc = allocate(io, request, from: done, count: count, clusters: run, l1Index: l1Index,
                              tableOffset: tableOffset, first: first, fillIsZero: noBacking)
            return rc < 0 ? Int64(rc) : Int64(count)
        case .refused:
            return -Int64(EIO)
        }
    }

    /// New clusters for `clusters` entries from `first` (and a new L2 table if the L1 entry
    /// has none), in QEMU's order: refcounts, data with its fill and the new table written,
    /// one fdatasync, then the entries (or the L1 entry) that point at them. The data
    /// clusters' refcounts come durable from the reservation; when the fill is all zeroes
    /// (no backing file) and no table is new, the fdatasync is left out: the clusters were
    /// never written (past the file's old end), so an entry that reaches the disk before its
    /// data shows zeroes, what the guest saw there before its unflushed write.
    private func allocate(_ io: Qcow2IO, _ request: UnsafeMutablePointer<BlockRequest>, from done: UInt64, count: UInt64,
                          clusters: UInt64, l1Index: UInt64, tableOffset: UInt64, first: UInt64, fillIsZero: Bool) -> Int32 {
        let clusterBits = UInt64(layout.clusterBits)
        var newTable: UInt64 = 0
        if tableOffset == 0 {
            let claimed = claim(1)
            if claimed < 0 { return Int32(claimed) }
            newTable = UInt64(claimed) << clusterBits
        }
        let claimed = claimDurable(clusters)
        if claimed < 0 { return Int32(claimed) }
        let data = UInt64(claimed) << clusterBits
        var rc = fillAndWrite(io, request, from: done, count: count, clusters: clusters, at: data)
        if rc < 0 { return rc }
        let entries = (tableScratch + Int(first) * 8).assumingMemoryBound(to: UInt64.self)
        for i in 0..<Int(clusters) {
            entries[i] = ((data + (UInt64(i) << clusterBits)) | Qcow2Entries.copiedFlag).bigEndian
        }
        if newTable != 0 { rc = Qcow2SyncIO.write(fd, tableScratch, Int(layout.clusterSize), at: newTable) }
        if rc == 0 && (newTable != 0 || !fillIsZero) { rc = Qcow2SyncIO.datasync(fd) }
        if rc < 0 { return rc }
        if newTable != 0 {
            rc = Qcow2SyncIO.writeBigEndian(fd, newTable | Qcow2Entries.copiedFlag, at: layout.l1Offset + l1Index * 8)
            if rc == 0 { io.setL2TableOffset(l1Index, newTable) }
            return rc
        }
        rc = Qcow2SyncIO.write(fd, entries, Int(clusters) * 8, at: tableOffset + first * 8)
        if rc == 0 { io.cache.update(l1Index: l1Index, first: Int(first), count: Int(clusters), from: entries) }
        return rc
    }

    /// Writes `clusters` whole clusters at `hostOffset`: the guest's `count` bytes (zeroes
    /// for write-zeroes) with the image's current contents around them (from the backing
    /// chain for unallocated clusters), in one pwritev.
    private func fillAndWrite(_ io: Qcow2IO, _ request: UnsafeMutablePointer<BlockRequest>, from done: UInt64, count: UInt64,
                              clusters: UInt64, at hostOffset: UInt64) -> Int32 {
        let position = request.pointee.offset + done
        let head = position & (layout.clusterSize - 1)
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

    /// Drops the references of a compressed cluster's bytes once the entry that replaced it
    /// is durable (each host cluster they touch lost one reference).
    private func releaseCompressed(hostOffset: UInt64, byteCount: UInt64) -> Int32 {
        var rc = Qcow2SyncIO.datasync(fd)
        if rc < 0 { return rc }
        let firstCluster = hostOffset >> UInt64(layout.clusterBits)
        let lastCluster = (hostOffset + max(byteCount, 1) - 1) >> UInt64(layout.clusterBits)
        for cluster in firstCluster...lastCluster {
            rc = release(cluster)
            if rc < 0 { return rc }
        }
        return 0
    }
}
