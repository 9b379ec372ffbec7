import CQcow2Zlib
import CSpindle
import Glibc
import IOThreads
import Qcow2Format
import Synchronization

/// What lies under a qcow2 image's unallocated clusters.
public enum Qcow2Backing: Sendable {
    case none
    case qcow2(Qcow2IO)
    /// A raw image (zeroes past its end).
    case raw(FileIO)

    /// The largest cluster of the qcow2 layers (0 if none).
    public var chainClusterSize: Int {
        if case .qcow2(let layer) = self { return layer.chainClusterSize }
        return 0
    }
}

/// The `qcow2` driver's data path. A read is cut into pieces, one at a
/// time (a request has at most one SQE in flight): host-contiguous allocated clusters are
/// one readv on the guest's own buffers into the image file; zero clusters and ranges past
/// the backing chain's end are zero-filled in place; unallocated ones are resolved in the
/// backing chain (which this driver walks itself: the layers share the request's scratch);
/// compressed clusters are read into the slot's scratch and inflated. An L2 table missing
/// from the cache is read into the slot's scratch, offered to the shared cache, and used
/// from the scratch. Nothing is allocated per request except the slot's scratch growing.
/// Writes (Qcow2IO+Write) take the same lookups: clusters with COPIED set are written in
/// place; everything else goes to the image's `Qcow2Allocator` (the slow path).
public final class Qcow2IO: BlockDriverIO {
    public let layout: Qcow2Layout
    /// The image file's descriptor (the `file` child's, borrowed).
    public let fd: Int32
    /// L2 table offsets by L1 index, checked at open; `Qcow2IO.corruptL1` marks a bad one.
    /// Set afterwards only by the allocation path (a new L2 table, once it is durable).
    nonisolated(unsafe) private let l1: UnsafeMutablePointer<Atomic<UInt64>>
    public let cache: Qcow2L2Cache
    /// Changed only under drain (a commit switching it to the base: `replaceBacking`).
    /// Read per request on the backing path: no dynamic exclusivity check (writes happen
    /// only under drain, when no request reads it).
    @exclusivity(unchecked) nonisolated(unsafe) public private(set) var backing: Qcow2Backing
    /// The slow path of a writable image (nil: read-only). Changed only under drain, by a
    /// reopen (`replaceAllocator`): the data path object stays, so overlays, filters and
    /// jobs that hold it keep working.
    @exclusivity(unchecked) nonisolated(unsafe) public private(set) var allocator: Qcow2Allocator?
    /// How many requests failed on corrupt metadata; the first one is reported (logged by
    /// the GS side's closure: once per image, so the error path allocates once at most).
    public let corruptionsSeen = Atomic<UInt64>(0)
    /// Whether inconsistent metadata was reported yet (once per image, Qcow2IO+Corrupt).
    let metadataCorruptionReported = Atomic<Bool>(false)
    /// Set by the control thread once it marked the image corrupt: writes fail with EIO.
    let markedCorrupt = Atomic<Bool>(false)
    private let reportCorruption: @Sendable (_ guestOffset: UInt64, _ problem: Qcow2EntryProblem) -> Void

    public static let corruptL1: UInt64 = .max
    /// The largest cluster of the qcow2 layers from here down: the scratch regions' size.
    public let chainClusterSize: Int

    public init(layout: Qcow2Layout, fd: Int32, l2TableOffsets: [UInt64], cache: Qcow2L2Cache, backing: Qcow2Backing,
                allocator: Qcow2Allocator? = nil, reportCorruption: @escaping @Sendable (_ guestOffset: UInt64, _ problem: Qcow2EntryProblem) -> Void) {
        self.reportCorruption = reportCorruption
        self.layout = layout
        self.fd = fd
        l1 = .allocate(capacity: max(1, l2TableOffsets.count))
        for (index, offset) in l2TableOffsets.enumerated() { (l1 + index).initialize(to: Atomic(offset)) }
        self.allocator = allocator
        self.cache = cache
        self.backing = backing
        if case .qcow2(let next) = backing {
            chainClusterSize = max(Int(layout.clusterSize), next.chainClusterSize)
        } else {
            chainClusterSize = Int(layout.clusterSize)
        }
    }

    /// A commit's switch of this image's backing layer to the layer under the removed ones
    /// (GS, only while every user is drained). The scratch sizing (chainClusterSize) is kept:
    /// the new chain is a part of the old.
    public func replaceBacking(_ next: Qcow2Backing) { backing = next }

    /// A reopen's switch between read-only (nil) and read-write (GS, only while every user
    /// is drained; the caller closed the old allocator first).
    public func replaceAllocator(_ next: Qcow2Allocator?) { allocator = next }

    deinit {
        l1.deinitialize(count: Int(layout.l1Size))
        l1.deallocate()
    }

    public var length: UInt64 { layout.virtualSize }
    public var writable: Bool { allocator != nil && !isMarkedCorrupt }

    static let stageIdle: UInt8 = 0
    static let stageReading: UInt8 = 1
    static let stageLoadingTable: UInt8 = 2
    static let stageReadingCompressed: UInt8 = 3

    public func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        switch request.pointee.operation {
        case .read:
            request.pointee.formatDone = 0
            request.pointee.formatTableDepth = 0xff
            request.pointee.stage = Self.stageIdle
            return run(request, on: context)
        case .flush, .write, .discard, .writeZeroes:
            // After the image was marked corrupt only flushes pass (see Qcow2IO+Corrupt).
            if isMarkedCorrupt && request.pointee.operation != .flush { return .done(-EIO) }
            return submitWrite(request, on: context)
        }
    }

    public func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? {
        let stage = request.pointee.stage
        request.pointee.stage = Self.stageIdle
        if result < 0 { return result }
        switch stage {
        case Self.stageReading:
            // Short only at the end of the file: a cluster past it reads zeroes (as QEMU).
            let piece = request.pointee.formatPiece
            if UInt64(result) < piece {
                Qcow2Pieces.fill(request, from: request.pointee.formatDone + UInt64(result), count: piece - UInt64(result))
            }
            request.pointee.formatDone += piece
        case Self.stageLoadingTable:
            guard let layer = layer(at: request.pointee.formatTableDepth), UInt64(result) == layer.layout.clusterSize else {
                return corruption(request, .pastEndOfFile)
            }
            layer.cache.insert(l1Index: request.pointee.formatTableIndex, table: Qcow2Pieces.table(request),
                               loadedAt: request.pointee.formatTableGeneration)
        case Self.stageReadingCompressed:
            guard inflateCluster(request, compressedBytes: Int(result)) else { return corruption(request, .compressedDataInvalid) }
        case Self.stageWriting, Self.stageFlushing, Self.stageAllocating:
            return completeWrite(request, result: result, stage: stage, on: context)
        default:
            return -EIO  // a CQE we did not ask for
        }
        let next = request.pointee.operation == .read ? run(request, on: context) : runWrite(request, on: context)
        switch next {
        case .queued: return nil
        case .done(let final): return final
        }
    }

    /// Works through the request's pieces until one needs the kernel (queued) or all are done.
    private func run(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        let total = request.pointee.length
        while request.pointee.formatDone < total {
            let done = request.pointee.formatDone
            let position = request.pointee.offset + done
            switch resolve(position, span: total - done, request: request) {
            case .zeroes(let count):
                Qcow2Pieces.fill(request, from: done, count: count)
                request.pointee.formatDone += count
            case .read(let readFD, let hostOffset, let count):
                return submitRead(request, fd: readFD, hostOffset: hostOffset, count: count, on: context)
            case .loadTable(let layerDepth, let tableFD, let l1Index, let tableOffset):
                return submitTableLoad(request, depth: layerDepth, fd: tableFD, l1Index: l1Index, tableOffset: tableOffset, on: context)
            case .compressed(let dataFD, let clusterBits, let hostOffset, let byteCount, let offsetInCluster, let count):
                request.pointee.formatClusterBits = UInt8(clusterBits)
                return submitCompressedRead(request, fd: dataFD, hostOffset: hostOffset, byteCount: byteCount,
                                            offsetInCluster: offsetInCluster, count: count, on: context)
            case .corrupt(let problem):
                return .done(corruption(request, problem))
            }
        }
        return .done(Int32(truncatingIfNeeded: total))
    }

    /// Fails the request with EIO; the image's first such failure is reported, and so is its
    /// first inconsistent metadata if that came later (see `isMetadataProblem`).
    func corruption(_ request: UnsafeMutablePointer<BlockRequest>, _ problem: Qcow2EntryProblem) -> Int32 {
        let first = corruptionsSeen.wrappingAdd(1, ordering: .relaxed).oldValue == 0
        let firstInMetadata = Self.isMetadataProblem(problem) && !metadataCorruptionReported.exchange(true, ordering: .relaxed)
        if first || firstInMetadata {
            reportCorruption(request.pointee.offset + request.pointee.formatDone, problem)
        }
        return -EIO
    }

    /// The layer `depth` levels below this one (0: this one; nil past the chain's qcow2
    /// layers). Depths count from the layer a request was submitted to.
    func layer(at depth: UInt8) -> Qcow2IO? {
        var layer = self
        for _ in 0..<depth {
            guard case .qcow2(let next) = layer.backing else { return nil }
            layer = next
        }
        return layer
    }

    /// The L2 table offset for `l1Index`: 0 unallocated, `corruptL1` corrupt.
    @inline(__always)
    public func l2TableOffset(_ l1Index: UInt64) -> UInt64 {
        l1Index < UInt64(layout.l1Size) ? l1[Int(l1Index)].load(ordering: .acquiring) : 0
    }

    /// A new L2 table for `l1Index`, written and durable (the allocation path).
    func setL2TableOffset(_ l1Index: UInt64, _ offset: UInt64) {
        l1[Int(l1Index)].store(offset, ordering: .releasing)
    }

    private func submitRead(_ request: UnsafeMutablePointer<BlockRequest>, fd readFD: Int32, hostOffset: UInt64, count: UInt64,
                            on context: IOContext) -> SubmitResult {
        let done = request.pointee.formatDone
        guard let sqe = context.sqe() else { return .done(-EBUSY) }
        if done == 0 && count == request.pointee.length {
            // The whole request in one piece: the guest's iovecs as they are.
            io_uring_prep_readv(sqe, readFD, request.pointee.iov, UInt32(request.pointee.iovcnt), hostOffset)
        } else {
            guard Qcow2Pieces.reserveScratch(request, extra: 0) else { return .done(-ENOMEM) }
            let pieceIOV = Qcow2Pieces.slice(request, from: done, count: count)
            io_uring_prep_readv(sqe, readFD, pieceIOV.iov, UInt32(pieceIOV.count), hostOffset)
        }
        sqe.pointee.user_data = request.pointee.token.rawValue
        request.pointee.formatPiece = count
        request.pointee.stage = Self.stageReading
        return .queued
    }

    func submitTableLoad(_ request: UnsafeMutablePointer<BlockRequest>, depth layerDepth: UInt8, fd tableFD: Int32, l1Index: UInt64,
                                 tableOffset: UInt64, on context: IOContext) -> SubmitResult {
        guard let layer = layer(at: layerDepth), Qcow2Pieces.reserveScratch(request, extra: chainClusterSize) else { return .done(-ENOMEM) }
        guard let sqe = context.sqe() else { return .done(-EBUSY) }
        io_uring_prep_read(sqe, tableFD, Qcow2Pieces.table(request), UInt32(layer.layout.clusterSize), tableOffset)
        sqe.pointee.user_data = request.pointee.token.rawValue
        request.pointee.formatTableDepth = layerDepth
        request.pointee.formatTableIndex = l1Index
        request.pointee.formatTableGeneration = layer.cache.generation.load(ordering: .sequentiallyConsistent)
        request.pointee.stage = Self.stageLoadingTable
        return .queued
    }

    private func submitCompressedRead(_ request: UnsafeMutablePointer<BlockRequest>, fd dataFD: Int32, hostOffset: UInt64, byteCount: UInt64,
                                      offsetInCluster: UInt64, count: UInt64, on context: IOContext) -> SubmitResult {
        let clusterSize = 1 << Int(request.pointee.formatClusterBits)
        // Table (kept), compressed bytes, inflated cluster, zlib's arena.
        let extra = chainClusterSize * 3 + Int(SPINDLE_QCOW2_INFLATE_ARENA)
        guard Qcow2Pieces.reserveScratch(request, extra: extra) else { return .done(-ENOMEM) }
        guard let sqe = context.sqe() else { return .done(-EBUSY) }
        // A compressed cluster never takes more than a cluster; the descriptor may say more.
        let bytes = UInt32(min(byteCount, UInt64(clusterSize)))
        io_uring_prep_read(sqe, dataFD, Qcow2Pieces.table(request) + chainClusterSize,
                           bytes, hostOffset)
        sqe.pointee.user_data = request.pointee.token.rawValue
        request.pointee.formatPiece = count
        request.pointee.formatPieceOffset = offsetInCluster
        request.pointee.stage = Self.stageReadingCompressed
        return .queued
    }

    /// Inflates the compressed bytes now in the scratch and copies the piece the request
    /// wants into its buffers. One cluster at most (2 MiB, a few ms): other queues of this
    /// IOThread wait that long at worst.
    private func inflateCluster(_ request: UnsafeMutablePointer<BlockRequest>, compressedBytes: Int) -> Bool {
        let clusterSize = 1 << Int(request.pointee.formatClusterBits)
        let compressed = Qcow2Pieces.table(request) + chainClusterSize
        let inflated = compressed + chainClusterSize
        let arena = inflated + chainClusterSize
        guard spindle_qcow2_inflate(inflated, clusterSize, compressed, compressedBytes, arena, Int(SPINDLE_QCOW2_INFLATE_ARENA)) == 0 else {
            return false
        }
        let piece = request.pointee.formatPiece
        Qcow2Pieces.copy(request, from: inflated + Int(request.pointee.formatPieceOffset), to: request.pointee.formatDone, count: piece)
        request.pointee.formatDone += piece
        return true
    }
}
