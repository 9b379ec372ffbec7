import BlockCommon

/// One leaky bucket (QEMU's model, util/throttle.c): every request pours its units (bytes or
/// operations) in; the bucket leaks `average` units per second. A request waits while the
/// bucket holds more than a second's tenth of `average` (so short bursts pass), or, with a
/// burst rate `max`, more than `max * burstLength` units; a second, smaller bucket leaking
/// at `max` keeps such bursts to `max` per second.
public struct ThrottleBucket: Sendable, Equatable {
    public var average: Double = 0
    public var max: Double = 0
    public var burstLength: Double = 1
    public var level: Double = 0
    public var burstLevel: Double = 0

    init(_ limit: ThrottleBucketLimit) {
        average = Double(limit.average)
        max = Double(limit.max)
        burstLength = Double(limit.maxLength)
    }

    @inline(__always)
    mutating func leak(nanoseconds: UInt64) {
        let seconds = Double(nanoseconds) / 1e9
        level = Swift.max(level - average * seconds, 0)
        if burstLength > 1 { burstLevel = Swift.max(burstLevel - max * seconds, 0) }
    }

    @inline(__always)
    mutating func pour(_ units: Double) {
        level += units
        if burstLength > 1 { burstLevel += units }
    }

    /// How long a request must wait before this bucket lets it pass (0: it may go now).
    @inline(__always)
    func waitNanoseconds() -> Double {
        guard average > 0 else { return 0 }
        let size = max > 0 ? max * burstLength : average / 10
        let extra = level - size
        if extra > 0 { return extra * 1e9 / average }
        if burstLength > 1 {
            let burstExtra = burstLevel - max / 10
            if burstExtra > 0 { return burstExtra * 1e9 / max }
        }
        return 0
    }
}

/// The six buckets of a group's limits and when they last leaked. A plain value: the group
/// keeps one under its lock; tests drive it with their own clock. Six stored buckets, not an
/// array: the hot path then does no reference counting or uniqueness checks.
public struct ThrottleBuckets: Sendable, Equatable {
    public private(set) var bpsTotal, bpsRead, bpsWrite, iopsTotal, iopsRead, iopsWrite: ThrottleBucket
    /// A request larger than this counts as size / iopsSize operations (0: always one).
    public private(set) var iopsSize: Double
    public private(set) var lastLeak: UInt64

    public init(limits: ThrottleLimits, now: UInt64) {
        bpsTotal = ThrottleBucket(limits[.bpsTotal])
        bpsRead = ThrottleBucket(limits[.bpsRead])
        bpsWrite = ThrottleBucket(limits[.bpsWrite])
        iopsTotal = ThrottleBucket(limits[.iopsTotal])
        iopsRead = ThrottleBucket(limits[.iopsRead])
        iopsWrite = ThrottleBucket(limits[.iopsWrite])
        iopsSize = Double(limits.iopsSize)
        lastLeak = now
    }

    public subscript(kind: ThrottleBucketKind) -> ThrottleBucket {
        switch kind {
        case .bpsTotal: return bpsTotal
        case .bpsRead: return bpsRead
        case .bpsWrite: return bpsWrite
        case .iopsTotal: return iopsTotal
        case .iopsRead: return iopsRead
        case .iopsWrite: return iopsWrite
        }
    }

    /// Lets every bucket leak what it has leaked since the last call.
    @inline(__always)
    public mutating func leak(now: UInt64) {
        guard now > lastLeak else { return }
        let elapsed = now - lastLeak
        lastLeak = now
        bpsTotal.leak(nanoseconds: elapsed)
        bpsRead.leak(nanoseconds: elapsed)
        bpsWrite.leak(nanoseconds: elapsed)
        iopsTotal.leak(nanoseconds: elapsed)
        iopsRead.leak(nanoseconds: elapsed)
        iopsWrite.leak(nanoseconds: elapsed)
    }

    /// How long a request in this direction must wait (after `leak`): the longest wait of
    /// the buckets it pours into. 0: it may go now.
    @inline(__always)
    public func waitNanoseconds(isWrite: Bool) -> UInt64 {
        let bytes = max(bpsTotal.waitNanoseconds(), (isWrite ? bpsWrite : bpsRead).waitNanoseconds())
        let operations = max(iopsTotal.waitNanoseconds(), (isWrite ? iopsWrite : iopsRead).waitNanoseconds())
        return UInt64(max(bytes, operations).rounded(.up))
    }

    /// Pours a request that goes now into its buckets: `bytes` into the bps ones, one
    /// operation (or bytes / iopsSize, if larger) into the iops ones.
    @inline(__always)
    public mutating func account(isWrite: Bool, bytes: UInt64) {
        let size = Double(bytes)
        let operations = iopsSize > 0 && size > iopsSize ? size / iopsSize : 1
        bpsTotal.pour(size)
        iopsTotal.pour(operations)
        if isWrite {
            bpsWrite.pour(size)
            iopsWrite.pour(operations)
        } else {
            bpsRead.pour(size)
            iopsRead.pour(operations)
        }
    }
}
