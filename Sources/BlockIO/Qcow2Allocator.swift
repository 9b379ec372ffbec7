import ControlThread
import Glibc
import Qcow2Format

/// The slow path of a writable qcow2 image: everything that changes its metadata (new data
/// clusters, new L2 tables, refcounts, refcount blocks, the refcount table's growth). One
/// per image, behind one lock: allocating writes of the node serialize here, from any
/// IOThread (QEMU serializes them per image too); the fast path (writes to clusters with
/// COPIED set) never takes it.
///
/// The I/O here is blocking pread/pwrite/fdatasync, run by the image's allocation worker
/// (`Qcow2AllocWorker`) in rounds that share one fdatasync: no IOThread waits for it.
///
/// Refcounts are eager (the lazy_refcounts bit is ignored and the dirty bit never set): a
/// refcount is durable before anything points at its cluster. Clusters are taken at the
/// end of the file, never reused while the image is open, so no I/O can be in flight to a
/// cluster being allocated.
public final class Qcow2Allocator: @unchecked Sendable {
    let fd: Int32
    let layout: Qcow2Layout
    let geometry: Qcow2RefcountGeometry
    /// Whether write-zeroes may set the zero flag (version 3 images; version 2 has none).
    let zeroClusters: Bool
    /// Where the header's refcount_table_offset (u64) and refcount_table_clusters (u32) are.
    static let refcountTableFieldsOffset: UInt64 = 48

    private let lock = PosixMutex<Void>(())
    // Everything below only under `lock`.
    /// Refcount block offsets by table index (0: no block), as on disk.
    private(set) var table: [UInt64]
    private(set) var tableOffset: UInt64
    /// The cluster (index) where the next allocation starts looking.
    private(set) var nextCluster: UInt64
    /// Clusters with a durable refcount of 1 that nothing points at yet (see `claimDurable`).
    private(set) var reserved: Range<UInt64> = 0..<0
    /// Copy-on-write fill: head (one cluster) and tail (one cluster).
    let fill: UnsafeMutableRawPointer
    /// One cluster: new refcount blocks are built here.
    let scratch: UnsafeMutableRawPointer
    /// The current round's plans, entries and new tables (see `Qcow2AllocRound`).
    let round: Qcow2AllocRound
    /// The thread that runs the rounds of the requests IOThreads hand over (nil: none could
    /// be made; IOThreads then run their pieces themselves, as `write` does).
    let worker: Qcow2AllocWorker?
    /// Compressed clusters of the chain read for a fill: two chain clusters and zlib's arena.
    let inflateScratch: UnsafeMutableRawPointer
    /// The source of write-zeroes (anonymous memory: reads as zeroes, never written).
    let zeroes: UnsafeMutableRawPointer
    var iov: UnsafeMutablePointer<iovec>
    var iovCapacity: Int

    /// `table`: the refcount table as decoded at open (checked by the caller).
    public init?(fd: Int32, layout: Qcow2Layout, version: UInt32, refcountOrder: UInt32, refcountTable: [UInt64], chainClusterSize: Int) {
        self.fd = fd
        zeroClusters = version >= 3
        self.layout = layout
        geometry = Qcow2RefcountGeometry(clusterBits: layout.clusterBits, refcountOrder: refcountOrder)
        table = refcountTable
        tableOffset = layout.refcountTableOffset
        let clusterSize = Int(layout.clusterSize)
        nextCluster = (layout.fileLength + layout.clusterSize - 1) >> UInt64(layout.clusterBits)
        let inflateBytes = chainClusterSize * 2 + 64 * 1024
        guard let round = Qcow2AllocRound(clusterSize: clusterSize),
              let fill = malloc(clusterSize * 2), let scratch = malloc(clusterSize),
              let inflate = malloc(inflateBytes),
              let zeroes = mmap(nil, clusterSize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), zeroes != MAP_FAILED else {
            return nil
        }
        self.fill = fill
        self.scratch = scratch
        self.round = round
        worker = Qcow2AllocWorker()
        inflateScratch = inflate
        self.zeroes = zeroes
        iovCapacity = 260
        iov = .allocate(capacity: iovCapacity)
    }

    deinit {
        free(fill)
        free(scratch)
        free(inflateScratch)
        munmap(zeroes, Int(layout.clusterSize))
        iov.deallocate()
    }

    func withLock<R>(_ body: () -> R) -> R {
        lock.withLock { _ in body() }
    }

    // MARK: refcounts (under the lock)

    /// The refcount of `cluster`, or -errno.
    func refcount(_ cluster: UInt64) -> Int64 {
        let (tableIndex, blockIndex) = geometry.locate(cluster: cluster)
        guard tableIndex < UInt64(table.count) else { return 0 }
        let block = table[Int(tableIndex)]
        if block == 0 { return 0 }
        let (offset, count) = geometry.entryBytes(index: blockIndex)
        var bytes: UInt64 = 0
        let got = Qcow2SyncIO.read(fd, &bytes, count, at: block + offset)
        guard got == count else { return got < 0 ? Int64(got) : -Int64(EIO) }
        let value = withUnsafeBytes(of: &bytes) { geometry.value(in: $0, index: blockIndex) }
        return value > UInt64(Int64.max) ? Int64.max : Int64(value)
    }

    /// Sets the refcount of `cluster`, whose range must have a block.
    func setRefcount(_ cluster: UInt64, to value: UInt64) -> Int32 {
        let (tableIndex, blockIndex) = geometry.locate(cluster: cluster)
        guard tableIndex < UInt64(table.count), table[Int(tableIndex)] != 0 else { return -EIO }
        let block = table[Int(tableIndex)]
        let (offset, count) = geometry.entryBytes(index: blockIndex)
        var bytes: UInt64 = 0
        guard Qcow2SyncIO.read(fd, &bytes, count, at: block + offset) == count else { return -EIO }
        withUnsafeMutableBytes(of: &bytes) { geometry.setValue(value, in: $0, index: blockIndex) }
        return Qcow2SyncIO.write(fd, &bytes, count, at: block + offset)
    }

    /// Takes `count` contiguous free clusters at the end of the image and sets their
    /// refcounts to 1 (written, not yet synced: the caller syncs before pointing at them).
    /// Adds refcount blocks and grows the refcount table on the way. Returns the first
    /// cluster's index, or -errno.
    func claim(_ count: UInt64) -> Int64 {
        search: while true {
            let start = nextCluster
            let firstRange = geometry.locate(cluster: start).tableIndex
            let lastRange = geometry.locate(cluster: start + count - 1).tableIndex
            for range in firstRange...lastRange where range >= UInt64(table.count) || table[Int(range)] == 0 {
                let rc = range >= UInt64(table.count) ? growTable(coveringRange: range) : addBlock(range: range)
                if rc < 0 { return Int64(rc) }
                continue search
            }
            let inUse = firstInUse(start, count: count)
            if inUse < 0 { return inUse }
            if UInt64(inUse) < start + count {
                // In use past the end of the file (only a strange image has this): skip it.
                nextCluster = UInt64(inUse) + 1
                continue search
            }
            let rc = setRefcounts(start, count: count, to: 1)
            if rc < 0 { return Int64(rc) }
            nextCluster = start + count
            return Int64(start)
        }
    }

    /// The first cluster of `start..<start + count` with a refcount other than 0 (`start +
    /// count` if none), or -errno; one read per refcount block touched. Blocks must exist.
    private func firstInUse(_ start: UInt64, count: UInt64) -> Int64 {
        var cluster = start
        while cluster < start + count {
            let piece = Qcow2AllocBatching.refcountPiece(geometry, cluster: cluster, count: start + count - cluster)
            let block = table[Int(piece.tableIndex)]
            guard Qcow2SyncIO.read(fd, scratch, piece.byteCount, at: block + piece.byteOffset) == piece.byteCount else { return -Int64(EIO) }
            for i in 0..<piece.entries {
                let index = piece.firstIndex + i
                let (offset, bytes) = geometry.entryBytes(index: index)
                let entry = UnsafeRawBufferPointer(start: scratch + Int(offset - piece.byteOffset), count: bytes)
                if geometry.value(in: entry, index: index) != 0 { return Int64(cluster + i) }
            }
            cluster += piece.entries
        }
        return Int64(start + count)
    }

    /// Sets the refcounts of `start..<start + count` to `value`: one read and one write per
    /// refcount block touched (blocks must exist). Written, not synced.
    func setRefcounts(_ start: UInt64, count: UInt64, to value: UInt64) -> Int32 {
        var cluster = start
        while cluster < start + count {
            let piece = Qcow2AllocBatching.refcountPiece(geometry, cluster: cluster, count: start + count - cluster)
            guard piece.tableIndex < UInt64(table.count), table[Int(piece.tableIndex)] != 0 else { return -EIO }
            let at = table[Int(piece.tableIndex)] + piece.byteOffset
            guard Qcow2SyncIO.read(fd, scratch, piece.byteCount, at: at) == piece.byteCount else { return -EIO }
            for i in 0..<piece.entries {
                let index = piece.firstIndex + i
                let (offset, bytes) = geometry.entryBytes(index: index)
                geometry.setValue(value, in: UnsafeMutableRawBufferPointer(start: scratch + Int(offset - piece.byteOffset), count: bytes), index: index)
            }
            let rc = Qcow2SyncIO.write(fd, scratch, piece.byteCount, at: at)
            if rc < 0 { return rc }
            cluster += piece.entries
        }
        return 0
    }

    /// Clusters per reservation: fresh data clusters come from a run whose refcounts were
    /// made durable together, one fdatasync for many allocations.
    var reservationClusters: UInt64 { Qcow2AllocBatching.reservationClusters(clusterBits: layout.clusterBits) }

    /// `count` contiguous clusters whose refcount of 1 is durable already, from the
    /// reservation (refilled with one `claim` and one fdatasync when it runs short; what is
    /// left of the old one is released). A crash leaks the reservation, nothing worse.
    func claimDurable(_ count: UInt64) -> Int64 {
        if UInt64(reserved.count) >= count {
            let start = reserved.lowerBound
            reserved = (start + count)..<reserved.upperBound
            return Int64(start)
        }
        var rc = releaseReservation()
        if rc < 0 { return Int64(rc) }
        let batch = max(count, reservationClusters)
        let start = claim(batch)
        if start < 0 { return start }
        rc = Qcow2SyncIO.datasync(fd)
        if rc < 0 { return Int64(rc) }
        reserved = (UInt64(start) + count)..<(UInt64(start) + batch)
        return start
    }

    /// Gives the reservation's clusters back (their refcounts to 0; never reused, since
    /// allocation only moves forward).
    func releaseReservation() -> Int32 {
        if reserved.isEmpty { return 0 }
        let rc = setRefcounts(reserved.lowerBound, count: UInt64(reserved.count), to: 0)
        if rc == 0 { reserved = reserved.upperBound..<reserved.upperBound }
        return rc
    }

    /// At close, on the control thread once no request is in flight: a clean close leaks
    /// nothing.
    public func close() -> Int32 {
        worker?.stop()
        return withLock { releaseReservation() }
    }

    /// On an IOThread whose ring is `owner`: gives `request`'s next piece to the worker
    /// (its result comes back as a CQE with the request's token). false: no worker, the
    /// caller calls `write` itself.
    func handOver(_ io: Qcow2IO, _ request: UnsafeMutablePointer<BlockRequest>, owner: Int32) -> Bool {
        worker?.handOver(request, owner: owner, io: io, allocator: self) ?? false
    }

    /// Drops one reference to `cluster` (a cluster no longer pointed at, durably).
    func release(_ cluster: UInt64) -> Int32 {
        let current = refcount(cluster)
        if current < 0 { return Int32(current) }
        guard current > 0 else { return -EIO }
        return setRefcount(cluster, to: UInt64(current) - 1)
    }

    /// A new refcount block for `range` (inside the table), at the next cluster. If that
    /// cluster lies in `range` the block counts itself; otherwise its range has a block
    /// already (ranges are filled in order) and counts it there. The block is durable before
    /// the table points at it.
    private func addBlock(range: UInt64) -> Int32 {
        let block = nextCluster
        let blockRange = geometry.locate(cluster: block).tableIndex
        memset(scratch, 0, Int(layout.clusterSize))
        if blockRange == range {
            let index = geometry.locate(cluster: block).blockIndex
            let (offset, count) = geometry.entryBytes(index: index)
            geometry.setValue(1, in: UnsafeMutableRawBufferPointer(start: scratch + Int(offset), count: count), index: index)
        } else {
            let current = refcount(block)
            if current < 0 { return Int32(current) }
            if current != 0 {
                nextCluster += 1
                return 0
            }
        }
        let offset = block << UInt64(layout.clusterBits)
        var rc = Qcow2SyncIO.write(fd, scratch, Int(layout.clusterSize), at: offset)
        if rc == 0 && blockRange != range { rc = setRefcount(block, to: 1) }
        if rc == 0 { rc = Qcow2SyncIO.datasync(fd) }
        if rc == 0 { rc = Qcow2SyncIO.writeBigEndian(fd, offset, at: tableOffset + range * 8) }
        if rc < 0 { return rc }
        table[Int(range)] = offset
        nextCluster = block + 1
        return 0
    }

    /// Moves the refcount table to the end of the file, larger, with new refcount blocks for
    /// itself: blocks and table written and synced, then the header switched to it (one
    /// 12-byte write) and synced, then the old table's clusters released.
    private func growTable(coveringRange range: UInt64) -> Int32 {
        let plan = geometry.planGrowth(oldEntries: UInt64(table.count), neededEntries: range + 1, endCluster: nextCluster)
        let clusterSize = Int(layout.clusterSize)
        guard plan.entries * 8 <= Qcow2Header.maximumRefcountTableBytes else { return -EFBIG }
        let oldEntries = UInt64(table.count)
        var newTable = table + [UInt64](repeating: 0, count: Int(plan.entries - oldEntries))
        var blocks = [UInt8](repeating: 0, count: Int(plan.blocks) * clusterSize)
        for i in 0..<plan.blocks {
            newTable[Int(plan.firstBlockRange + i)] = (plan.firstBlockCluster + i) << UInt64(layout.clusterBits)
        }
        // Counts for the new table's and blocks' own clusters: in the new blocks, or in the
        // existing block of a range the old table covers.
        for cluster in plan.tableCluster..<plan.endCluster {
            let (tableIndex, blockIndex) = geometry.locate(cluster: cluster)
            if tableIndex < oldEntries {
                let current = refcount(cluster)
                if current != 0 { return current < 0 ? Int32(current) : -EIO }
                let rc = setRefcount(cluster, to: 1)
                if rc < 0 { return rc }
                continue
            }
            let (offset, count) = geometry.entryBytes(index: blockIndex)
            let start = Int(tableIndex - plan.firstBlockRange) * clusterSize + Int(offset)
            blocks.withUnsafeMutableBytes { bytes in
                geometry.setValue(1, in: UnsafeMutableRawBufferPointer(rebasing: bytes[start..<(start + count)]), index: blockIndex)
            }
        }
        let newOffset = plan.tableCluster << UInt64(layout.clusterBits)
        var encoded = [UInt8](repeating: 0, count: Int(plan.tableClusters) * clusterSize)
        for (index, value) in newTable.enumerated() {
            for byte in 0..<8 { encoded[index * 8 + byte] = UInt8(truncatingIfNeeded: value >> UInt64(56 - byte * 8)) }
        }
        var rc: Int32 = 0
        if plan.blocks > 0 {
            rc = blocks.withUnsafeBytes { Qcow2SyncIO.write(fd, $0.baseAddress!, $0.count, at: plan.firstBlockCluster << UInt64(layout.clusterBits)) }
        }
        if rc == 0 { rc = encoded.withUnsafeBytes { Qcow2SyncIO.write(fd, $0.baseAddress!, $0.count, at: newOffset) } }
        if rc == 0 { rc = Qcow2SyncIO.datasync(fd) }
        if rc < 0 { return rc }
        var fields = [UInt8](repeating: 0, count: 12)
        for byte in 0..<8 { fields[byte] = UInt8(truncatingIfNeeded: newOffset >> UInt64(56 - byte * 8)) }
        for byte in 0..<4 { fields[8 + byte] = UInt8(truncatingIfNeeded: plan.tableClusters >> UInt64(24 - byte * 8)) }
        rc = fields.withUnsafeBytes { Qcow2SyncIO.write(fd, $0.baseAddress!, 12, at: Self.refcountTableFieldsOffset) }
        if rc == 0 { rc = Qcow2SyncIO.datasync(fd) }
        if rc < 0 { return rc }
        let oldOffset = tableOffset
        let oldClusters = (oldEntries * 8 + layout.clusterSize - 1) >> UInt64(layout.clusterBits)
        table = newTable
        tableOffset = newOffset
        nextCluster = plan.endCluster
        // The old table is unreachable now; a crash before these writes only leaks it.
        for cluster in 0..<oldClusters {
            rc = release((oldOffset >> UInt64(layout.clusterBits)) + cluster)
            if rc < 0 { return rc }
        }
        return 0
    }
}
