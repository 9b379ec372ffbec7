import CSpindle
import Glibc
import IOThreads

/// The `throttle` filter's data path (QEMU's block/throttle.c): reads, writes, write-zeroes
/// and discards pass through its group's buckets (ThrottleGroup) before they reach the
/// child; flushes are not limited. A request over the limit waits in its IOThread's queue
/// of the group and reaches the child when the queue's timer releases it; it stays counted
/// in flight meanwhile, so a drain waits for it (and the timer keeps releasing).
///
/// Stages of a request (its `throttleStage`): passing (the child has it), waiting (in the
/// queue, no SQE), timer (the head of its queue: its own token rides the queue's timeout
/// SQE) and released (a NOP SQE with its token brings it back to `complete`, which hands it
/// to the child: a request released by another request's timer needs a CQE of its own to
/// report a result at once, e.g. from null-co).
public final class ThrottleFilterIO: BlockDriverIO {
    public let child: any BlockDriverIO
    public let group: ThrottleGroup

    static let stagePassing: UInt8 = 0
    static let stageWaiting: UInt8 = 1
    static let stageTimer: UInt8 = 2
    static let stageReleased: UInt8 = 3

    public init(child: any BlockDriverIO, group: ThrottleGroup) {
        self.child = child
        self.group = group
    }

    public var length: UInt64 { child.length }
    public var writable: Bool { child.writable }

    public func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        let operation = request.pointee.operation
        guard operation != .flush else {
            request.pointee.throttleStage = Self.stagePassing
            return child.submit(request, on: context)
        }
        request.pointee.throttleStage = Self.stageWaiting
        switch group.admit(request, isWrite: operation != .read, bytes: request.pointee.length, on: context) {
        case .go:
            request.pointee.throttleStage = Self.stagePassing
            return child.submit(request, on: context)
        case .wait(let timer):
            if let timer { arm(timer, on: context) }
            return .queued
        }
    }

    public func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? {
        switch request.pointee.throttleStage {
        case Self.stageTimer:
            // The queue's timeout fired (its -ETIME says nothing about the request).
            request.pointee.throttleStage = Self.stageWaiting
            let (released, timer) = group.release(on: context)
            var selfReleased = false
            var next = released
            while let current = next {
                next = current.pointee.throttleNext
                current.pointee.throttleNext = nil
                if current == request {
                    selfReleased = true
                } else {
                    bringBack(current, on: context)
                }
            }
            if let timer { arm(timer, on: context) }
            return selfReleased ? passDown(request, on: context) : nil
        case Self.stageReleased:
            return passDown(request, on: context)
        default:
            return child.complete(request, result: result, on: context)
        }
    }

    @inline(__always)
    private func passDown(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> Int32? {
        request.pointee.throttleStage = Self.stagePassing
        switch child.submit(request, on: context) {
        case .queued: return nil
        case .done(let result): return result
        }
    }

    /// A released request other than the one whose CQE is being handled: a NOP with its token.
    @inline(__always)
    private func bringBack(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) {
        request.pointee.throttleStage = Self.stageReleased
        guard let sqe = context.sqe() else { return }  // the ring is broken: nothing completes any more
        io_uring_prep_nop(sqe)
        sqe.pointee.user_data = request.pointee.token.rawValue
    }

    @inline(__always)
    private func arm(_ timer: ThrottleGroup.Timer, on context: IOContext) {
        timer.request.pointee.throttleStage = Self.stageTimer
        guard let sqe = context.sqe() else { return }
        io_uring_prep_timeout(sqe, timer.timeout, 0, 0)
        sqe.pointee.user_data = timer.request.pointee.token.rawValue
    }
}
