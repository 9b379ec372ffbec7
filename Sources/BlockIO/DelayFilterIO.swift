import CSpindle
import Glibc
import IOThreads
import Synchronization

/// The `x-delay` filter's data path (TEST ONLY; QEMU's blkdebug and null-co's latency-ns
/// in short): requests go to the child's data path, but every `holdEvery`th completion is
/// held back for a fixed time, so that completions go out of order, and every `failEvery`th
/// request fails at once with an errno, without reaching the child.
///
/// A hold is an io_uring timeout whose CQE carries the request's own token: nothing is
/// allocated per request and the IOThread never blocks. The counters are shared by every
/// IOThread using the node (relaxed atomics: only the counts matter, not their order).
public final class DelayFilterIO: BlockDriverIO {
    public let child: any BlockDriverIO
    public let holdEvery: UInt64
    public let failEvery: UInt64
    /// -errno of the failed requests.
    private let failResult: Int32
    private let completions = Atomic<UInt64>(0)
    private let requests = Atomic<UInt64>(0)
    /// Read by the kernel when a timeout SQE is submitted; the same one for every hold.
    nonisolated(unsafe) private let holdTime: UnsafeMutablePointer<__kernel_timespec>

    private static let stagePassing: UInt8 = 0
    private static let stageHeld: UInt8 = 1

    public init(child: any BlockDriverIO, holdEvery: UInt64, holdMilliseconds: UInt64, failEvery: UInt64, failErrno: Int32) {
        self.child = child
        self.holdEvery = holdEvery
        self.failEvery = failEvery
        failResult = -abs(failErrno)
        holdTime = .allocate(capacity: 1)
        holdTime.initialize(to: __kernel_timespec(tv_sec: Int64(holdMilliseconds / 1000),
                                                  tv_nsec: Int64(holdMilliseconds % 1000) * 1_000_000))
    }

    deinit { holdTime.deallocate() }

    public var length: UInt64 { child.length }
    public var writable: Bool { child.writable }

    public func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        request.pointee.holdStage = Self.stagePassing
        if failEvery > 0 && requests.wrappingAdd(1, ordering: .relaxed).newValue % failEvery == 0 {
            return .done(failResult)
        }
        switch child.submit(request, on: context) {
        case .queued: return .queued
        case .done(let result):
            // Finished without a CQE (e.g. null-co): it may be held all the same.
            return hold(request, result: result, on: context) ? .queued : .done(result)
        }
    }

    public func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? {
        if request.pointee.holdStage == Self.stageHeld {
            // The timeout fired (its own result, -ETIME, says nothing about the request).
            request.pointee.holdStage = Self.stagePassing
            return request.pointee.heldResult
        }
        guard let final = child.complete(request, result: result, on: context) else { return nil }
        return hold(request, result: final, on: context) ? nil : final
    }

    /// Holds the final `result` back if this is an Nth completion: queues a timeout whose
    /// CQE brings the request back to `complete`. False: the result goes up now.
    @inline(__always)
    private func hold(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Bool {
        guard holdEvery > 0, completions.wrappingAdd(1, ordering: .relaxed).newValue % holdEvery == 0,
              let sqe = context.sqe() else { return false }
        request.pointee.heldResult = result
        request.pointee.holdStage = Self.stageHeld
        io_uring_prep_timeout(sqe, holdTime, 0, 0)
        sqe.pointee.user_data = request.pointee.token.rawValue
        return true
    }
}
