import CSpindle
import Glibc
import Synchronization

/// The filter a mirror job puts between a BlockBackend and the node it mirrors (QEMU's
/// mirror_top): reads go to the source; every write, write-zeroes and discard, once the
/// source finished it, marks its range dirty so the job copies it again; and once the job
/// is READY, writes and write-zeroes are also written to the target before the guest hears
/// of them (a second SQE for the same request), which keeps the two in sync.
///
/// A failed write to the target never fails the guest's request (the source has the data):
/// the range stays dirty and the job sees `targetErrno` and stops with an error.
public final class MirrorFilterIO: BlockDriverIO {
    public let source: any BlockDriverIO
    public let target: any BlockDriverIO
    public let bitmap: DirtyBitmap
    private let writeThrough = Atomic<Bool>(false)
    private let targetFailure = Atomic<Int32>(0)

    private static let stageSource: UInt8 = 0
    private static let stageTarget: UInt8 = 1

    public init(source: any BlockDriverIO, target: any BlockDriverIO, bitmap: DirtyBitmap) {
        self.source = source
        self.target = target
        self.bitmap = bitmap
    }

    public var length: UInt64 { source.length }
    public var writable: Bool { source.writable }

    /// From now on guest writes go to the target too (the job reached READY).
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
        bitmap.markDirty(offset: request.pointee.offset, length: request.pointee.length)
        guard result >= 0, operation != .discard, writeThrough.load(ordering: .sequentiallyConsistent) else { return result }
        request.pointee.filterStage = Self.stageTarget
        switch target.submit(request, on: context) {
        case .queued: return nil
        case .done(let targetResult): return targetDone(request, result: targetResult)
        }
    }

    /// The target finished its copy: the guest gets the source's success either way.
    @inline(__always)
    private func targetDone(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32) -> Int32 {
        if result < 0 {
            bitmap.markDirty(offset: request.pointee.offset, length: request.pointee.length)
            _ = targetFailure.compareExchange(expected: 0, desired: -result, ordering: .sequentiallyConsistent)
        }
        return request.pointee.operation == .write ? Int32(truncatingIfNeeded: request.pointee.length) : 0
    }
}
