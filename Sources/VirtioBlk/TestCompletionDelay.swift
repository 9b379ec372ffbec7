import BlockIO
import CSpindle
import Glibc
import IOThreads

/// TEST ONLY. With `SPINDLE_TEST_DELAY_EVERY=N` in the environment, every Nth request's
/// completion is held back for `SPINDLE_TEST_DELAY_MS` milliseconds (default 50) before it
/// reaches the used ring, so completions go out of order. The restart tests use it to show
/// that the inflight region, not in-order completion, is what makes a backend crash safe.
/// The hold is an io_uring timeout: the IOThread never blocks. Off (nil) in normal use.
final class TestCompletionDelay {
    static let every: Int? = environmentInt("SPINDLE_TEST_DELAY_EVERY").flatMap { $0 > 0 ? $0 : nil }
    static let milliseconds: Int = environmentInt("SPINDLE_TEST_DELAY_MS") ?? 50

    /// Tags with this bit are held completions coming back (low bits: the slot).
    static let tagBit: UInt64 = 1 << 29

    private let every: Int
    private var seen = 0
    private let results: UnsafeMutablePointer<Int32>
    private let slotCount: Int
    /// The kernel reads it when the timeout is submitted: it must stay put until then.
    private let timeout: UnsafeMutablePointer<__kernel_timespec>

    init?(slots: Int) {
        guard let every = Self.every else { return nil }
        self.every = every
        slotCount = slots
        results = .allocate(capacity: max(slots, 1))
        results.initialize(repeating: 0, count: max(slots, 1))
        timeout = .allocate(capacity: 1)
        timeout.initialize(to: __kernel_timespec(tv_sec: Int64(Self.milliseconds / 1000),
                                                 tv_nsec: Int64(Self.milliseconds % 1000) * 1_000_000))
    }

    deinit {
        results.deallocate()
        timeout.deallocate()
    }

    /// Holds this completion if it is an Nth one: remembers `result` and queues a timeout
    /// whose CQE carries `handler`'s token with `tagBit | slot`. False: complete it now.
    func hold(slot: Int, result: Int32, handler: HandlerID, on context: IOContext) -> Bool {
        seen += 1
        guard seen % every == 0, slot < slotCount, let sqe = context.sqe() else { return false }
        results[slot] = result
        io_uring_prep_timeout(sqe, timeout, 0, 0)
        sqe.pointee.user_data = CompletionToken(handler: handler, tag: Self.tagBit | UInt64(slot)).rawValue
        return true
    }

    /// The held result of `slot`, once its timeout fired.
    func release(slot: Int) -> Int32? {
        slot < slotCount ? results[slot] : nil
    }

    private static func environmentInt(_ name: String) -> Int? {
        getenv(name).flatMap { Int(String(cString: $0)) }
    }
}
