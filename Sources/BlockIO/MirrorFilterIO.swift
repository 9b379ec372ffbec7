import CSpindle
import Glibc
import IOThreads
import Synchronization

/// The filter a mirror job puts between a BlockBackend and the node it mirrors (QEMU's
/// mirror_top). Reads go to the source. Until the copier has been over the whole image
/// once, every write, write-zeroes and discard marks its range dirty once the source has
/// it, so the copier copies it (again). From then on (`startWritingThrough`) writes and
/// write-zeroes also go to the target before the guest hears of them (a second SQE for the
/// same request), so they need no copy: the range is marked dirty only if the target write
/// failed or the copier is copying an overlapping range at that moment (its read may have
/// seen the old data). This is what lets the job converge under a steady stream of writes.
///
/// A failed write to the target never fails the guest's request (the source has the data):
/// the range stays dirty and the job sees `targetErrno` and stops with an error.
public final class MirrorFilterIO: BlockDriverIO {
    public let source: any BlockDriverIO
    public let target: any BlockDriverIO
    public let bitmap: DirtyBitmap
    private let writeThrough = Atomic<Bool>(false)
    private let targetFailure = Atomic<Int32>(0)
    /// The granules the copier is copying now: first << 32 | count, 0 when none.
    private let copyWindow = Atomic<UInt64>(0)

    private static let stageSource: UInt8 = 0
    private static let stageTarget: UInt8 = 1

    public init(source: any BlockDriverIO, target: any BlockDriverIO, bitmap: DirtyBitmap) {
        self.source = source
        self.target = target
        self.bitmap = bitmap
    }

    public var length: UInt64 { source.length }
    public var writable: Bool { source.writable }

    /// The copier is about to read `count` granules from `first` (publish before reading).
    public func copying(first: Int, count: Int) {
        copyWindow.store(UInt64(first) << 32 | UInt64(count), ordering: .sequentiallyConsistent)
    }

    /// The copier wrote what it read to the target.
    public func copyDone() { copyWindow.store(0, ordering: .sequentiallyConsistent) }

    /// From now on guest writes go to the target too (the copier has been over the image once).
    public func startWritingThrough() { writeThrough.store(true, ordering: .sequentiallyConsistent) }

    /// The errno (positive) of the first failed write to the target, or 0.
    public var targetErrno: Int32 { targetFailure.load(ordering: .sequentiallyConsistent) }

    public func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        request.pointee.filterStage = Self.stageSource
        switch source.submit(request, on: context) {
        case .queued: return .queued
        case .done(let result):
            // Finished without a CQE (e.g. null-co): run the same completion logic.
            guard let final = sourceDone(request, result: result, on: context) else { return .queued }
            return .done(final)
        }
    }

    public func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? {
        if request.pointee.filterStage == Self.stageTarget {
            guard let targetResult = target.complete(request, result: result, on: context) else { return nil }
            return targetDone(request, result: targetResult)
        }
        guard let final = source.complete(request, result: result, on: context) else { return nil }
        return sourceDone(request, result: final, on: context)
    }

    /// The source finished the request: mark, and write through if READY.
    @inline(__always)
    private func sourceDone(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? {
        let operation = request.pointee.operation
        guard operation == .write || operation == .writeZeroes || operation == .discard else { return result }
        guard result >= 0, operation != .discard, writeThrough.load(ordering: .sequentiallyConsistent) else {
            bitmap.markDirty(offset: request.pointee.offset, length: request.pointee.length)
            return result
        }
        request.pointee.filterStage = Self.stageTarget
        switch target.submit(request, on: context) {
        case .queued: return nil
        case .done(let targetResult): return targetDone(request, result: targetResult)
        }
    }

    /// The target finished its copy: the guest gets the source's success either way.
    @inline(__always)
    private func targetDone(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32) -> Int32 {
        let offset = request.pointee.offset
        let length = request.pointee.length
        if result < 0 {
            bitmap.markDirty(offset: offset, length: length)
            _ = targetFailure.compareExchange(expected: 0, desired: -result, ordering: .sequentiallyConsistent)
        } else if overlapsCopy(offset: offset, length: length) {
            bitmap.markDirty(offset: offset, length: length)
        }
        return request.pointee.operation == .write ? Int32(truncatingIfNeeded: request.pointee.length) : 0
    }

    @inline(__always)
    private func overlapsCopy(offset: UInt64, length: UInt64) -> Bool {
        let window = copyWindow.load(ordering: .sequentiallyConsistent)
        guard window != 0, length > 0 else { return false }
        let first = window >> 32
        let end = first + (window & 0xFFFF_FFFF)
        let shift = UInt64(bitmap.granularity.trailingZeroBitCount)
        let writeFirst = offset >> shift
        let (last, overflow) = offset.addingReportingOverflow(length - 1)
        let writeEnd = (overflow ? UInt64.max : last) >> shift + 1
        return writeFirst < end && first < writeEnd
    }
}
