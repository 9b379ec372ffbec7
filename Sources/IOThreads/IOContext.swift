import CSpindle
import Glibc
import Synchronization

/// One IOThread's io_uring, as the I/O side sees it: drivers take SQEs from it; the owning
/// IOThread submits and reaps. Used only by the thread that owns it, except the completion
/// account (`reserveCompletions`/`releaseCompletions`), which any thread may use.
///
/// The invariants that keep a request from ever failing for lack of ring space:
/// - Completion queue: every handler reserves, before its first SQE, a CQ entry for each
///   CQE it can have outstanding at once (a virtqueue: one per request slot, plus its kick
///   poll and poll removals); a reservation that does not fit is refused at setup. Each
///   request has at most one SQE in flight at a time (drivers resubmit only from its
///   completion), and the IOThread frees a CQE's entry before calling its handler, so the
///   CQ never overflows.
/// - Submission queue: a full SQ is submitted and the entry taken again (`sqe()`). With the
///   CQ reserved, the kernel has no reason to refuse, except a transient lack of memory
///   (-EAGAIN), which is retried; `sqe()` returns nil only if the ring itself is broken.
public final class IOContext: @unchecked Sendable {
    public let ring: UnsafeMutablePointer<io_uring>
    public let entries: UInt32
    /// The completion queue's size, as the kernel set it up.
    public let completionEntries: Int
    private let reservedCompletions = Atomic<Int>(0)
    /// The thread that submits and reaps (debug-build checks): the creator, until an
    /// IOThread that built its ring on the control thread takes it over.
    private let owner = ThreadOwner()

    /// CLOCK_MONOTONIC (ns) when the owning IOThread began its current batch (after waking,
    /// or at each turn of its busy-poll loop): one clock read shared by every request started
    /// or completed in that batch (request statistics: VirtioBlkRequestHandler). Owner only.
    @usableFromInline let batchClock: UnsafeMutablePointer<UInt64>

    /// Requests of this thread that wait on other threads instead of on this ring (rbd:
    /// librbd's and librados' threads, the network). While one is in flight the IOThread does
    /// not busy-poll (IOThread.pollOnce): its completion is milliseconds away and comes from
    /// threads that need the CPU a spinning IOThread would hold. Owner only.
    @usableFromInline let offRingRequests: UnsafeMutablePointer<Int>

    /// How many times `sqe()` submits a full SQ before it gives up.
    private static let submitAttempts = 1_000

    /// Creates the ring. `completionEntries`: the CQ's size (default: four times the SQ).
    public init(entries: UInt32, completionEntries: UInt32? = nil) throws(IOContextError) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        self.entries = entries
        var params = io_uring_params()
        params.flags = UInt32(IORING_SETUP_CQSIZE)
        params.cq_entries = completionEntries ?? entries * 4
        let rc = io_uring_queue_init_params(entries, ring, &params)
        guard rc == 0 else {
            ring.deallocate()
            throw IOContextError(errno: -rc)
        }
        self.completionEntries = Int(ring.pointee.cq.ring_entries)
        batchClock = .allocate(capacity: 1)
        batchClock.initialize(to: Self.monotonicNanoseconds())
        offRingRequests = .allocate(capacity: 1)
        offRingRequests.initialize(to: 0)
        owner.bindToCurrentThread()
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
        batchClock.deallocate()
        offRingRequests.deallocate()
    }

    // MARK: the batch clock (the owning thread)

    /// When the current batch began (see `batchClock`). Its resolution is one batch: a
    /// request stamped with it may have started or completed up to one batch's work later
    /// (microseconds; tens of them when a batch takes 256 completions), and one that
    /// completes in the batch it started in counts 0 ns.
    @inlinable @inline(__always)
    public var batchNanoseconds: UInt64 { batchClock.pointee }

    /// A new batch begins at `now` (CLOCK_MONOTONIC ns, read by the caller anyway).
    @inlinable @inline(__always)
    public func beginBatch(at now: UInt64) {
        batchClock.pointee = now
    }

    /// A new batch begins now (one clock read: the vDSO, no system call).
    @inlinable @inline(__always)
    public func beginBatch() {
        beginBatch(at: Self.monotonicNanoseconds())
    }

    // MARK: requests completed off the ring (the owning thread)

    /// A driver queued a request that other threads complete (see `offRingRequests`).
    @inlinable @inline(__always)
    public func offRingRequestStarted() { offRingRequests.pointee &+= 1 }

    /// Such a request completed, on this (its owning) thread.
    @inlinable @inline(__always)
    public func offRingRequestEnded() { offRingRequests.pointee &-= 1 }

    /// Requests in flight that other threads complete.
    @inlinable @inline(__always)
    public var offRingRequestsInFlight: Int { offRingRequests.pointee }

    /// CLOCK_MONOTONIC in ns.
    @inlinable @inline(__always)
    public static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(truncatingIfNeeded: now.tv_sec) &* 1_000_000_000 &+ UInt64(truncatingIfNeeded: now.tv_nsec)
    }

    // MARK: the completion account (any thread)

    /// CQ entries reserved by handlers so far.
    public var completionsReserved: Int { reservedCompletions.load(ordering: .relaxed) }

    /// Reserves `count` CQ entries for a handler, before it submits anything; refused (false)
    /// if they do not fit beside those reserved already.
    public func reserveCompletions(_ count: Int) -> Bool {
        precondition(count >= 0)
        var reserved = reservedCompletions.load(ordering: .relaxed)
        while true {
            guard reserved + count <= completionEntries else { return false }
            let (exchanged, original) = reservedCompletions.compareExchange(
                expected: reserved, desired: reserved + count, ordering: .relaxed)
            if exchanged { return true }
            reserved = original
        }
    }

    /// Gives back what `reserveCompletions` took, once the handler has no CQE outstanding.
    public func releaseCompletions(_ count: Int) {
        let before = reservedCompletions.subtract(count, ordering: .relaxed).oldValue
        precondition(before >= count, "completion queue entries released twice")
    }

    // MARK: submission (the owning thread)

    /// Makes the calling thread the ring's owner (an IOThread, when it starts running).
    public func bindToCurrentThread() {
        owner.bindToCurrentThread()
    }

    /// Traps in debug builds when called off the thread that owns the ring; nothing in release.
    @inline(__always)
    public func assertOnThread(file: StaticString = #fileID, line: UInt = #line) {
        owner.assertOwned("IOContext", file: file, line: line)
    }

    /// A submission entry, submitting what is queued if the SQ is full. nil only if the kernel
    /// refuses submissions for good (the ring is broken; then the caller fails its request).
    @inline(__always)
    public func sqe() -> UnsafeMutablePointer<io_uring_sqe>? {
        assertOnThread()
        if let sqe = io_uring_get_sqe(ring) { return sqe }
        return sqeAfterSubmitting()
    }

    /// The SQ is full: hand it to the kernel, then take an entry. The kernel takes the queued
    /// SQEs in order; one it cannot prepare completes at once with an error CQE and ends that
    /// call (the next round takes the rest). It takes none only when it lacks memory for them
    /// (-EAGAIN) or, on older kernels, holds CQEs in overflow (-EBUSY, which the reservation
    /// rules out); both are retried after giving the CPU away.
    @inline(never)
    private func sqeAfterSubmitting() -> UnsafeMutablePointer<io_uring_sqe>? {
        for _ in 0..<Self.submitAttempts {
            let rc = io_uring_submit(ring)
            if let sqe = io_uring_get_sqe(ring) { return sqe }
            if rc < 0 && rc != -EAGAIN && rc != -EBUSY && rc != -EINTR { return nil }
            sched_yield()
        }
        return nil
    }

    /// Hands what is queued to the kernel now instead of at the end of the thread's pass.
    @inline(__always)
    public func submitNow() {
        _ = io_uring_submit(ring)
    }
}

public struct IOContextError: Error, CustomStringConvertible, Sendable {
    public let errno: Int32
    public var description: String {
        "cannot set up io_uring: \(String(cString: strerror(errno))) (is io_uring disabled by sysctl kernel.io_uring_disabled?)"
    }
}
