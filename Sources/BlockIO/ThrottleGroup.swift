import BlockCommon
import CSpindle
import Glibc
import IOThreads
import Synchronization

/// A throttle group's shared state (QEMU's ThrottleGroup): the leaky buckets every throttle
/// node of the group pours into, and the requests waiting for them, in one FIFO per IOThread.
///
/// Fairness across IOThreads: a request that must wait takes a ticket (the group's arrival
/// order); while any request of the group waits, new ones queue behind it instead of
/// passing; and a queue's head is released only when it holds the oldest ticket of the
/// whole group. So requests go in arrival order whichever IOThread serves them, and no
/// queue can starve another. An IOThread releases only its own requests (it owns its ring):
/// each queue with waiters has one timer, an io_uring timeout on its head request, armed
/// for when the buckets will let the head go (at most `maxTimerNanoseconds`, so that new
/// limits take effect soon; a queue waiting for another thread's older request looks again
/// when the buckets would allow a request, and at least `turnTimerNanoseconds` later).
///
/// The state is behind a pthread mutex of this group only, held for a few bucket updates;
/// nothing is allocated per request (the queues are lists through the requests' slots).
public final class ThrottleGroup: @unchecked Sendable {
    public let name: String

    /// IOThreads that may have requests waiting in one group at once.
    public static let maxQueues = 64
    /// A head may go this much before the buckets would let it: waking once per request at
    /// high rates would cost more than the limit's precision gains (the buckets still count it).
    static let releaseSlackNanoseconds: UInt64 = 500_000
    static let minTimerNanoseconds: UInt64 = 20_000
    static let turnTimerNanoseconds: UInt64 = 100_000
    static let maxTimerNanoseconds: UInt64 = 100_000_000

    struct WaitQueue {
        /// The IOContext whose thread owns this queue (unretained identity), nil when free.
        var owner: UnsafeMutableRawPointer?
        var head: UnsafeMutablePointer<BlockRequest>?
        var tail: UnsafeMutablePointer<BlockRequest>?
        var timerArmed = false
    }

    struct Core {
        var limits: ThrottleLimits
        var buckets: ThrottleBuckets
        var nextTicket: UInt64 = 1
        var waiting = 0
        /// Queues [0, usedQueues) may be owned.
        var usedQueues = 0
    }

    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let core: UnsafeMutablePointer<Core>
    private let queues: UnsafeMutablePointer<WaitQueue>
    /// Each queue's timeout; the kernel reads it when the timer's SQE is submitted.
    private let timeouts: UnsafeMutablePointer<__kernel_timespec>
    private let waitedCount = Atomic<UInt64>(0)
    private let passedCount = Atomic<UInt64>(0)

    public init(name: String, limits: ThrottleLimits) {
        self.name = name
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        core = .allocate(capacity: 1)
        core.initialize(to: Core(limits: limits, buckets: ThrottleBuckets(limits: limits, now: Self.now())))
        queues = .allocate(capacity: Self.maxQueues)
        queues.initialize(repeating: WaitQueue(), count: Self.maxQueues)
        timeouts = .allocate(capacity: Self.maxQueues)
        timeouts.initialize(repeating: __kernel_timespec(), count: Self.maxQueues)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        core.deinitialize(count: 1)
        core.deallocate()
        queues.deallocate()
        timeouts.deallocate()
    }

    // MARK: control side (any thread)

    public var limits: ThrottleLimits {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return core.pointee.limits
    }

    /// New limits, in force for the next request; waiting ones are looked at again within
    /// `maxTimerNanoseconds`. The buckets start empty (as QEMU's throttle_config).
    public func setLimits(_ limits: ThrottleLimits) {
        let buckets = ThrottleBuckets(limits: limits, now: Self.now())
        pthread_mutex_lock(mutex)
        core.pointee.limits = limits
        core.pointee.buckets = buckets
        pthread_mutex_unlock(mutex)
    }

    /// Requests that had to wait, and requests that went at once, since the group was made.
    public var waitedRequests: UInt64 { waitedCount.load(ordering: .relaxed) }
    public var passedRequests: UInt64 { passedCount.load(ordering: .relaxed) }

    /// Requests waiting now, on every IOThread.
    public var waitingRequests: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return core.pointee.waiting
    }

    // MARK: I/O side (IOThreads)

    /// A timer to arm: an io_uring timeout after `timeout` with `request`'s token.
    public struct Timer {
        public let request: UnsafeMutablePointer<BlockRequest>
        public let timeout: UnsafeMutablePointer<__kernel_timespec>
    }

    public enum Admission {
        /// Pass it down now (counted in the buckets).
        case go
        /// It waits in the IOThread's queue; arm `timer` if given (the queue had none).
        case wait(Timer?)
    }

    /// A read or write arrives on the IOThread of `context`: it goes now if nothing waits and
    /// the buckets allow it, else it joins its IOThread's queue.
    public func admit(_ request: UnsafeMutablePointer<BlockRequest>, isWrite: Bool, bytes: UInt64, on context: IOContext) -> Admission {
        let owner = Unmanaged.passUnretained(context).toOpaque()
        let now = Self.now()
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        core.pointee.buckets.leak(now: now)
        if core.pointee.waiting == 0 && core.pointee.buckets.waitNanoseconds(isWrite: isWrite) == 0 {
            core.pointee.buckets.account(isWrite: isWrite, bytes: bytes)
            passedCount.wrappingAdd(1, ordering: .relaxed)
            return .go
        }
        guard let index = queueIndex(of: owner, claiming: true) else {
            // More IOThreads than the table holds: let it through rather than lose it.
            core.pointee.buckets.account(isWrite: isWrite, bytes: bytes)
            passedCount.wrappingAdd(1, ordering: .relaxed)
            return .go
        }
        waitedCount.wrappingAdd(1, ordering: .relaxed)
        request.pointee.throttleTicket = core.pointee.nextTicket
        core.pointee.nextTicket &+= 1
        request.pointee.throttleNext = nil
        core.pointee.waiting += 1
        let queue = queues + index
        if let tail = queue.pointee.tail {
            tail.pointee.throttleNext = request
        } else {
            queue.pointee.head = request
        }
        queue.pointee.tail = request
        guard !queue.pointee.timerArmed else { return .wait(nil) }
        queue.pointee.timerArmed = true
        return .wait(timer(for: index, isOldest: isOldest(request), isWrite: isWrite))
    }

    /// The timer of `context`'s queue fired: takes off its queue, in order, the requests
    /// that may go now (returned as a list through `throttleNext`, counted in the buckets),
    /// and says which timer to arm if some still wait.
    public func release(on context: IOContext) -> (released: UnsafeMutablePointer<BlockRequest>?, timer: Timer?) {
        let owner = Unmanaged.passUnretained(context).toOpaque()
        let now = Self.now()
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        guard let index = queueIndex(of: owner, claiming: false) else { return (nil, nil) }
        core.pointee.buckets.leak(now: now)
        let queue = queues + index
        var releasedHead: UnsafeMutablePointer<BlockRequest>? = nil
        var releasedTail: UnsafeMutablePointer<BlockRequest>? = nil
        while let head = queue.pointee.head, isOldest(head) {
            let isWrite = head.pointee.operation != .read
            guard core.pointee.buckets.waitNanoseconds(isWrite: isWrite) <= Self.releaseSlackNanoseconds else { break }
            core.pointee.buckets.account(isWrite: isWrite, bytes: head.pointee.length)
            queue.pointee.head = head.pointee.throttleNext
            if queue.pointee.head == nil { queue.pointee.tail = nil }
            core.pointee.waiting -= 1
            head.pointee.throttleNext = nil
            if let last = releasedTail { last.pointee.throttleNext = head } else { releasedHead = head }
            releasedTail = head
        }
        guard let head = queue.pointee.head else {
            queue.pointee = WaitQueue()  // free for any thread
            trimUsedQueues()
            return (releasedHead, nil)
        }
        return (releasedHead, timer(for: index, isOldest: isOldest(head), isWrite: head.pointee.operation != .read))
    }

    // MARK: under the mutex

    private func timer(for index: Int, isOldest: Bool, isWrite: Bool) -> Timer {
        // Nothing goes before the buckets allow it: a queue waiting for its turn need not look
        // sooner, but then soon after (the oldest request may be released by then).
        var wait = core.pointee.buckets.waitNanoseconds(isWrite: isWrite)
        if !isOldest { wait = max(wait, Self.turnTimerNanoseconds) }
        wait = min(max(wait, Self.minTimerNanoseconds), Self.maxTimerNanoseconds)
        timeouts[index] = __kernel_timespec(tv_sec: Int64(wait / 1_000_000_000), tv_nsec: Int64(wait % 1_000_000_000))
        return Timer(request: queues[index].head!, timeout: timeouts + index)
    }

    /// Whether `request` holds the oldest ticket of every queue's head.
    private func isOldest(_ request: UnsafeMutablePointer<BlockRequest>) -> Bool {
        let ticket = request.pointee.throttleTicket
        for i in 0..<core.pointee.usedQueues {
            if let head = queues[i].head, head.pointee.throttleTicket < ticket { return false }
        }
        return true
    }

    private func queueIndex(of owner: UnsafeMutableRawPointer, claiming: Bool) -> Int? {
        var free: Int? = nil
        for i in 0..<core.pointee.usedQueues {
            if queues[i].owner == owner { return i }
            if free == nil && queues[i].owner == nil { free = i }
        }
        guard claiming else { return nil }
        if free == nil && core.pointee.usedQueues < Self.maxQueues {
            free = core.pointee.usedQueues
            core.pointee.usedQueues += 1
        }
        if let free { queues[free].owner = owner }
        return free
    }

    private func trimUsedQueues() {
        while core.pointee.usedQueues > 0 && queues[core.pointee.usedQueues - 1].owner == nil { core.pointee.usedQueues -= 1 }
    }

    @inline(__always)
    static func now() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }
}
