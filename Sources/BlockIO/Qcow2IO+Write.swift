import CSpindle
import Glibc
import IOThreads
import Qcow2Format

/// Writes, flushes, discards and write-zeroes of a qcow2 node.
///
/// The fast path: a write whose clusters have COPIED set (refcount exactly 1) is an L2
/// lookup in the shared cache and one writev on the guest's own buffers per run of
/// host-contiguous clusters, nothing locked. Everything else (unallocated, zero, compressed
/// clusters, an L2 table not there yet; discards of version 3 images) is handed to the
/// image's allocation worker (`Qcow2AllocWorker`), which runs it in its next round under the
/// image's allocation lock, updates the shared cache and posts the piece's result back to
/// this IOThread's ring as a CQE with the request's token: the IOThread never waits for it.
///
/// A write's lookup may be stale only towards "not allocated yet" (a data cluster with
/// COPIED is never moved, freed or shared while the image is open read-write), and the
/// allocator looks again on disk under its lock, so a stale lookup costs time, never data.
extension Qcow2IO {
    static let stageWriting: UInt8 = 4
    static let stageFlushing: UInt8 = 5
    /// At the allocation worker; the CQE's result is the piece's bytes or -errno.
    static let stageAllocating: UInt8 = 9

    func submitWrite(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        guard allocator != nil else { return .done(-EROFS) }
        request.pointee.stage = Self.stageIdle
        switch request.pointee.operation {
        case .flush:
            // Metadata is written through (never held in memory), in the order that keeps the
            // image consistent; a flush makes data and metadata durable with one fdatasync.
            guard let sqe = context.sqe() else { return .done(-EBUSY) }
            io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC)
            sqe.pointee.user_data = request.pointee.token.rawValue
            request.pointee.stage = Self.stageFlushing
            return .queued
        case .discard:
            // Version 2 images have no zero flag: there the discard stays advisory (the
            // clusters keep their data); version 3 frees whole clusters (Qcow2Discard).
            guard allocator!.zeroClusters else { return .done(0) }
            request.pointee.formatDone = 0
            request.pointee.formatTableDepth = 0xff
            return runWrite(request, on: context)
        case .write, .writeZeroes:
            request.pointee.formatDone = 0
            request.pointee.formatTableDepth = 0xff
            return runWrite(request, on: context)
        case .read:
            return .done(-EINVAL)
        }
    }

    func completeWrite(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, stage: UInt8, on context: IOContext) -> Int32? {
        if stage == Self.stageFlushing { return result }
        if stage == Self.stageAllocating {
            // Failures came back negative (returned before this); 0 bytes never does.
            let written = UInt64(max(0, request.pointee.driverResult))
            guard written > 0 else { return -EIO }
            request.pointee.formatTableDepth = 0xff  // the request's own copy may predate the allocation
            request.pointee.formatDone += written
            switch runWrite(request, on: context) {
            case .queued: return nil
            case .done(let final): return final
            }
        }
        let piece = request.pointee.formatPiece
        guard UInt64(result) == piece else { return -EIO }  // short write: the disk is full or failing
        request.pointee.formatDone += piece
        switch runWrite(request, on: context) {
        case .queued: return nil
        case .done(let final): return final
        }
    }

    /// Works through the write's pieces until one needs the kernel or all are done.
    func runWrite(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        let total = request.pointee.length
        while request.pointee.formatDone < total {
            let done = request.pointee.formatDone
            let position = request.pointee.offset + done
            if request.pointee.operation == .write, let run = copiedRun(position, span: total - done, request: request) {
                switch run {
                case .write(let hostOffset, let count):
                    return submitWritePiece(request, hostOffset: hostOffset, count: count, on: context)
                case .loadTable(let l1Index, let tableOffset):
                    return submitTableLoad(request, depth: 0, fd: fd, l1Index: l1Index, tableOffset: tableOffset, on: context)
                }
            }
            request.pointee.stage = Self.stageAllocating
            if allocator!.handOver(self, request, owner: context.ring.pointee.ring_fd) { return .queued }
            request.pointee.stage = Self.stageIdle
            let written = allocator!.write(self, request, from: done)
            if written <= 0 {
                // Reported once per image (then counted); the guest sees the error.
                let metadata = written == -Int64(EUCLEAN)  // inconsistent metadata: the image gets marked corrupt
                let code = corruption(request, metadata ? .writeOverlapsMetadata : .allocationFailed)
                return .done(written == 0 || metadata ? code : Int32(written))
            }
            // The request's own copy of a table may predate the allocation: drop it.
            request.pointee.formatTableDepth = 0xff
            request.pointee.formatDone += UInt64(written)
        }
        return .done(Int32(truncatingIfNeeded: total))
    }

    enum CopiedRun {
        case write(hostOffset: UInt64, count: UInt64)
        case loadTable(l1Index: UInt64, tableOffset: UInt64)
    }

    /// The fast path's answer for a write at `position`: host-contiguous clusters with COPIED
    /// set, the table to read first, or nil (the allocator's work).
    @inline(__always)
    func copiedRun(_ position: UInt64, span: UInt64, request: UnsafeMutablePointer<BlockRequest>) -> CopiedRun? {
        let clusterBits = UInt64(layout.clusterBits)
        let clusterSize = layout.clusterSize
        let l1Index = position >> (clusterBits + UInt64(layout.l2Bits))
        let tableOffset = l2TableOffset(l1Index)
        if tableOffset == 0 || tableOffset == Self.corruptL1 { return nil }
        let index = Int((position >> clusterBits) & ((1 << UInt64(layout.l2Bits)) - 1))
        guard let raw = l2Entry(l1Index: l1Index, index: index, depth: 0, request: request) else {
            return .loadTable(l1Index: l1Index, tableOffset: tableOffset)
        }
        guard let host = Self.copiedHost(raw, layout: layout) else { return nil }
        let offsetInCluster = position & (clusterSize - 1)
        var count = min(span, clusterSize - offsetInCluster)
        var next = index + 1
        let entries = 1 << Int(layout.l2Bits)
        while count < span && next < entries {
            guard let nextRaw = l2Entry(l1Index: l1Index, index: next, depth: 0, request: request),
                  let nextHost = Self.copiedHost(nextRaw, layout: layout), nextHost == host + offsetInCluster + count else { break }
            count += min(clusterSize, span - count)
            next += 1
        }
        return .write(hostOffset: host + offsetInCluster, count: count)
    }

    /// The host cluster of a plain data entry with COPIED set (nil for anything else).
    @inline(__always)
    static func copiedHost(_ raw: UInt64, layout: Qcow2Layout) -> UInt64? {
        guard raw & (Qcow2Entries.copiedFlag | Qcow2Entries.compressedFlag | Qcow2Entries.zeroFlag) == Qcow2Entries.copiedFlag,
              case .data(let host, _) = layout.check(Qcow2Entries.decodeL2(raw, clusterBits: layout.clusterBits)) else { return nil }
        return host
    }

    private func submitWritePiece(_ request: UnsafeMutablePointer<BlockRequest>, hostOffset: UInt64, count: UInt64,
                                  on context: IOContext) -> SubmitResult {
        let done = request.pointee.formatDone
        guard let sqe = context.sqe() else { return .done(-EBUSY) }
        if done == 0 && count == request.pointee.length {
            // The whole request in one piece: the guest's buffers as they are.
            if request.pointee.iovcnt == 1, let iov = request.pointee.iov {
                io_uring_prep_write(sqe, fd, iov.pointee.iov_base, UInt32(iov.pointee.iov_len), hostOffset)
            } else {
                io_uring_prep_writev(sqe, fd, request.pointee.iov, UInt32(request.pointee.iovcnt), hostOffset)
            }
        } else {
            guard Qcow2Pieces.reserveScratch(request, extra: chainClusterSize) else { return .done(-ENOMEM) }
            let pieceIOV = Qcow2Pieces.slice(request, from: done, count: count)
            io_uring_prep_writev(sqe, fd, pieceIOV.iov, UInt32(pieceIOV.count), hostOffset)
        }
        if request.pointee.fua { sqe.pointee.rw_flags = UInt32(RWF_DSYNC) }
        sqe.pointee.user_data = request.pointee.token.rawValue
        request.pointee.formatPiece = count
        request.pointee.stage = Self.stageWriting
        return .queued
    }
}
