/// Block statistics as plain values: what the IOThreads counted, read at query time. The
/// counters themselves live in `VirtioBlk/BlockStatsCounters.swift`; these snapshots are
/// what leaves the I/O side (query-blockstats renders them, the metrics endpoint samples
/// them). All times are nanoseconds; `lastCompletionNs` is CLOCK_MONOTONIC.

/// The kinds of request counted apart (QEMU's BlockAcctType, plus GET_ID and other types).
public enum BlockStatsOperation: Int, Sendable, CaseIterable, CustomStringConvertible {
    case read, write, flush, discard, writeZeroes
    /// GET_ID and every other request type (only ever counted as invalid or operations).
    case other

    public var description: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .flush: "flush"
        case .discard: "discard"
        case .writeZeroes: "write-zeroes"
        case .other: "other"
        }
    }
}

/// Fixed log2 latency buckets, the same for every queue: bin 0 holds latencies below
/// `boundariesNs[0]` (1024 ns), bin i holds [boundariesNs[i-1], boundariesNs[i]), the last
/// bin everything from 2^36 ns (~69 s) up. The shape of QEMU's BlockLatencyHistogramInfo.
public enum BlockLatencyBuckets {
    public static let firstShift = 10
    public static let lastShift = 36
    /// 27 boundaries: 2^10 ... 2^36 ns.
    public static let boundariesNs: [UInt64] = (firstShift...lastShift).map { UInt64(1) << UInt64($0) }
    public static let binCount = lastShift - firstShift + 2

    /// The bin of a latency: one count-leading-zeros, no loop, no table (literals, not the
    /// statics above: this runs per request and a global's lazy initialiser would be checked).
    @inlinable @inline(__always)
    public static func bin(forNanoseconds ns: UInt64) -> Int {
        let log2 = 63 &- ns.leadingZeroBitCount  // -1 for 0
        if log2 < 10 { return 0 }
        return min(log2 &- 9, 27)
    }
}

/// One kind of request's figures. `operations` and `bytes` count requests that succeeded;
/// `failed` those that reached the image and failed (or hit a revoked export); `invalid`
/// those refused before (malformed, out of range, unsupported); `merged` is always 0
/// (Spindle never merges requests). `totalTimeNs` and the histogram cover succeeded and
/// failed requests, from leaving the ring to completion.
public struct BlockOperationStats: Sendable, Equatable {
    public var operations: UInt64 = 0
    public var bytes: UInt64 = 0
    public var failed: UInt64 = 0
    public var invalid: UInt64 = 0
    public var merged: UInt64 = 0
    public var totalTimeNs: UInt64 = 0
    /// `BlockLatencyBuckets.binCount` bins.
    public var latencyHistogram: [UInt64] = Array(repeating: 0, count: BlockLatencyBuckets.binCount)

    public init() {}

    public mutating func add(_ other: BlockOperationStats) {
        operations &+= other.operations
        bytes &+= other.bytes
        failed &+= other.failed
        invalid &+= other.invalid
        merged &+= other.merged
        totalTimeNs &+= other.totalTimeNs
        for i in latencyHistogram.indices where i < other.latencyHistogram.count {
            latencyHistogram[i] &+= other.latencyHistogram[i]
        }
    }
}

/// The figures of one queue, or the sum over several.
public struct BlockIOStats: Sendable, Equatable {
    /// Indexed by `BlockStatsOperation.rawValue`; use the subscript.
    public var byOperation: [BlockOperationStats] = Array(repeating: BlockOperationStats(), count: BlockStatsOperation.allCases.count)
    /// The end (offset + length) of the highest successful write, write-zeroes or discard.
    public var wrHighestOffset: UInt64 = 0
    /// Requests handed to the image and not completed yet.
    public var inFlight: UInt64 = 0
    /// When the last request completed (CLOCK_MONOTONIC ns); nil before the first.
    public var lastCompletionNs: UInt64?

    public init() {}

    public subscript(_ operation: BlockStatsOperation) -> BlockOperationStats {
        get { byOperation[operation.rawValue] }
        set { byOperation[operation.rawValue] = newValue }
    }

    /// Nanoseconds since the last completion (QEMU's idle_time_ns); nil before the first.
    public func idleTimeNs(now: UInt64) -> UInt64? {
        lastCompletionNs.map { now >= $0 ? now - $0 : 0 }
    }

    public mutating func add(_ other: BlockIOStats) {
        for operation in BlockStatsOperation.allCases { self[operation].add(other[operation]) }
        wrHighestOffset = max(wrHighestOffset, other.wrHighestOffset)
        inFlight &+= other.inFlight
        if let theirs = other.lastCompletionNs { lastCompletionNs = max(lastCompletionNs ?? 0, theirs) }
    }
}

/// One virtqueue of an export.
public struct BlockQueueStats: Sendable, Equatable {
    public var queue: Int
    /// The IOThread serving it now; nil while the queue does not run (no frontend).
    public var iothread: String?
    public var stats: BlockIOStats
    public init(queue: Int, iothread: String? = nil, stats: BlockIOStats) {
        self.queue = queue
        self.iothread = iothread
        self.stats = stats
    }
}

/// One export: its queues' figures since the export was added. They survive queue moves,
/// frontend reconnects, resizes and mirror pivots (the counters belong to the export).
public struct BlockExportStats: Sendable, Equatable {
    public var exportID: String
    /// The node the export uses now; nil once revoked (drive_del).
    public var nodeName: String?
    /// Every queue the device has, running or not, by queue index.
    public var queues: [BlockQueueStats]
    public init(exportID: String, nodeName: String?, queues: [BlockQueueStats]) {
        self.exportID = exportID
        self.nodeName = nodeName
        self.queues = queues
    }

    /// The sum over the queues.
    public var total: BlockIOStats {
        queues.reduce(into: BlockIOStats()) { $0.add($1.stats) }
    }
}

/// One named node. Spindle counts per export, not inside the block layer: a node's figures
/// are the sum of the exports that use it now (after a mirror pivot, including what those
/// exports did before it).
public struct BlockNodeStats: Sendable, Equatable {
    public var nodeName: String
    /// The exports summed into `stats`.
    public var exports: [String]
    public var stats: BlockIOStats
    public init(nodeName: String, exports: [String], stats: BlockIOStats) {
        self.nodeName = nodeName
        self.exports = exports
        self.stats = stats
    }
}

/// Everything query-blockstats (and a metrics scrape) needs, taken at one moment.
public struct BlockStatsReport: Sendable, Equatable {
    public var exports: [BlockExportStats]
    /// Every named node, sorted by name.
    public var nodes: [BlockNodeStats]
    /// CLOCK_MONOTONIC when the report was taken (for idle times).
    public var nowNs: UInt64
    public init(exports: [BlockExportStats], nodes: [BlockNodeStats], nowNs: UInt64) {
        self.exports = exports
        self.nodes = nodes
        self.nowNs = nowNs
    }
}
