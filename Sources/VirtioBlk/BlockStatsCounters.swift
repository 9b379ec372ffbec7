import BlockCommon
import Glibc
import Synchronization

/// An export's request counters: one block of 64-bit counters per virtqueue, owned by the
/// device, so they outlive the queues (a queue move, a frontend reconnect, a resize or a
/// mirror pivot keeps counting into the same block; nothing has to be folded anywhere).
///
/// Why this is race-free and tear-free without a lock or an atomic read-modify-write:
/// - one writer per block: a queue index runs on one IOThread at a time, and it changes
///   thread only through a stop on the old thread and a start posted to the new one (the
///   IOThread inbox's mutex and eventfd order the old thread's last stores before the new
///   thread's first ones); a reconnect's queues start only after the old session stopped its.
/// - the writer does a relaxed load and a relaxed store (`bump`): no `lock add`, on x86 a
///   plain `mov`/`add`/`mov` to memory no other thread writes.
/// - the control thread reads with relaxed atomic loads: 64-bit aligned atomic loads never
///   tear, and the memory model has no data race. A snapshot is not one instant across
///   fields (a request completing meanwhile may show in `operations` but not yet in
///   `totalTimeNs`); each figure only grows.
/// Each block starts on its own cache line(s), so two queues' IOThreads never share a line.
public final class BlockStatsTable: @unchecked Sendable {
    /// Counters per queue (fixed layout, see `BlockStatsLayout`).
    public let queueCount: Int
    private let blocks: UnsafeMutablePointer<Atomic<UInt64>>

    public init(queueCount: Int) {
        self.queueCount = max(queueCount, 0)
        // One spare block past the last queue: a queue index out of range counts there
        // instead of outside the table.
        let words = (self.queueCount + 1) * BlockStatsLayout.blockWords
        let raw = UnsafeMutableRawPointer.allocate(byteCount: words * 8, alignment: 64)
        blocks = raw.bindMemory(to: Atomic<UInt64>.self, capacity: words)
        for i in 0..<words { (blocks + i).initialize(to: Atomic(0)) }
    }

    deinit {
        UnsafeMutableRawPointer(blocks).deallocate()
    }

    /// The counter block of `queue`, for the queue's request handler.
    public func counters(queue: Int) -> BlockStatsCounters {
        let index = queue >= 0 && queue < queueCount ? queue : queueCount
        return BlockStatsCounters(block: blocks + index * BlockStatsLayout.blockWords)
    }

    /// Every queue's figures now (any thread; relaxed loads).
    public func snapshot() -> [BlockIOStats] {
        (0..<queueCount).map { counters(queue: $0).snapshot() }
    }
}

/// Where each counter sits in a queue's block: per operation kind, `perOperationWords`
/// words (operations, bytes, failed, invalid, total time, then the histogram's bins), then
/// the queue-wide words.
enum BlockStatsLayout {
    static let operations = 0, bytes = 1, failed = 2, invalid = 3, totalTimeNs = 4, firstBin = 5
    static let perOperationWords = 5 + 28  // BlockLatencyBuckets.binCount
    static let kinds = 6  // BlockStatsOperation.allCases.count
    static let wrHighestOffset = kinds * perOperationWords
    static let lastCompletionNs = wrHighestOffset + 1
    static let submitted = wrHighestOffset + 2
    static let completed = wrHighestOffset + 3
    /// Rounded up to whole 64-byte lines.
    static let blockWords = (completed + 1 + 7) & ~7
}

/// One queue's counters as its handler updates them: only from the IOThread serving the
/// queue. A plain pointer (no reference counting per request); valid while the table lives
/// (the device keeps it, and the handler keeps the device).
public struct BlockStatsCounters: @unchecked Sendable {
    let block: UnsafeMutablePointer<Atomic<UInt64>>

    init(block: UnsafeMutablePointer<Atomic<UInt64>>) {
        self.block = block
    }

    /// CLOCK_MONOTONIC in ns (the vDSO: no system call).
    @inline(__always)
    public static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(truncatingIfNeeded: time.tv_sec) &* 1_000_000_000 &+ UInt64(truncatingIfNeeded: time.tv_nsec)
    }

    /// Adds `value` to a counter: single writer, so a relaxed load and store (no lock prefix).
    @inline(__always)
    func bump(_ word: Int, by value: UInt64 = 1) {
        let counter = block + word
        counter.pointee.store(counter.pointee.load(ordering: .relaxed) &+ value, ordering: .relaxed)
    }

    @inline(__always)
    func set(_ word: Int, to value: UInt64) {
        block[word].store(value, ordering: .relaxed)
    }

    @inline(__always)
    func read(_ word: Int) -> UInt64 {
        block[word].load(ordering: .relaxed)
    }

    /// A request handed to the image (counted in flight until `completed`).
    @inline(__always)
    public func submitted() {
        bump(BlockStatsLayout.submitted)
    }

    /// A request refused before reaching the image (QEMU's "invalid").
    @inline(__always)
    public func invalid(_ kind: BlockStatsOperation) {
        bump(kind.rawValue * BlockStatsLayout.perOperationWords + BlockStatsLayout.invalid)
    }

    /// A request failed without reaching the image (the export was revoked: no medium).
    @inline(__always)
    public func failedAtOnce(_ kind: BlockStatsOperation, at now: UInt64) {
        bump(kind.rawValue * BlockStatsLayout.perOperationWords + BlockStatsLayout.failed)
        bump(kind.rawValue * BlockStatsLayout.perOperationWords + BlockStatsLayout.firstBin)
        set(BlockStatsLayout.lastCompletionNs, to: now)
    }

    /// A request answered without the image (GET_ID): an operation with no latency to speak of.
    @inline(__always)
    public func answeredAtOnce(_ kind: BlockStatsOperation, bytes: UInt64, at now: UInt64) {
        let base = kind.rawValue * BlockStatsLayout.perOperationWords
        bump(base + BlockStatsLayout.operations)
        bump(base + BlockStatsLayout.bytes, by: bytes)
        bump(base + BlockStatsLayout.firstBin)
        set(BlockStatsLayout.lastCompletionNs, to: now)
    }

    /// A submitted request completed: `failed`, or `bytes` transferred; for writes,
    /// write-zeroes and discards `end` is offset + length.
    @inline(__always)
    public func completed(_ kind: BlockStatsOperation, bytes: UInt64, end: UInt64, failed: Bool,
                          startedAt start: UInt64, now: UInt64) {
        let base = kind.rawValue * BlockStatsLayout.perOperationWords
        if failed {
            bump(base + BlockStatsLayout.failed)
        } else {
            bump(base + BlockStatsLayout.operations)
            bump(base + BlockStatsLayout.bytes, by: bytes)
            if end > read(BlockStatsLayout.wrHighestOffset) { set(BlockStatsLayout.wrHighestOffset, to: end) }
        }
        let latency = now >= start ? now &- start : 0
        bump(base + BlockStatsLayout.totalTimeNs, by: latency)
        bump(base + BlockStatsLayout.firstBin + BlockLatencyBuckets.bin(forNanoseconds: latency))
        set(BlockStatsLayout.lastCompletionNs, to: now)
        bump(BlockStatsLayout.completed)
    }

    /// The figures now (any thread).
    public func snapshot() -> BlockIOStats {
        var stats = BlockIOStats()
        for kind in BlockStatsOperation.allCases {
            let base = kind.rawValue * BlockStatsLayout.perOperationWords
            var figures = BlockOperationStats()
            figures.operations = read(base + BlockStatsLayout.operations)
            figures.bytes = read(base + BlockStatsLayout.bytes)
            figures.failed = read(base + BlockStatsLayout.failed)
            figures.invalid = read(base + BlockStatsLayout.invalid)
            figures.totalTimeNs = read(base + BlockStatsLayout.totalTimeNs)
            figures.latencyHistogram = (0..<BlockLatencyBuckets.binCount).map { read(base + BlockStatsLayout.firstBin + $0) }
            stats[kind] = figures
        }
        stats.wrHighestOffset = read(BlockStatsLayout.wrHighestOffset)
        // Completed is read first: a request completing in between cannot make this negative.
        let completed = read(BlockStatsLayout.completed)
        let submitted = read(BlockStatsLayout.submitted)
        stats.inFlight = submitted >= completed ? submitted - completed : 0
        let last = read(BlockStatsLayout.lastCompletionNs)
        stats.lastCompletionNs = last == 0 ? nil : last
        return stats
    }
}

/// When each slot's request left the ring: one word per request slot, written and read only
/// on the queue's IOThread. Allocated in the handler's `prepare` (first touched there).
struct BlockStatsSlotClock {
    let count: Int
    private let startTimes: UnsafeMutablePointer<UInt64>

    init(count: Int) {
        self.count = count
        startTimes = .allocate(capacity: max(count, 1))
        startTimes.initialize(repeating: 0, count: max(count, 1))
    }

    func deallocate() {
        startTimes.deallocate()
    }

    @inline(__always) func start(_ slot: Int, at now: UInt64) {
        if slot < count { startTimes[slot] = now }
    }

    @inline(__always) func startTime(_ slot: Int) -> UInt64 {
        slot < count ? startTimes[slot] : 0
    }
}
