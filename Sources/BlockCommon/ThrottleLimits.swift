/// The six leaky buckets of an I/O limit, in QEMU's names (`bps-total`, `iops-read`, ...).
public enum ThrottleBucketKind: Int, CaseIterable, Sendable {
    case bpsTotal, bpsRead, bpsWrite, iopsTotal, iopsRead, iopsWrite

    /// The name in throttle-group's `limits` (`x-` + name for its flat properties).
    public var name: String {
        switch self {
        case .bpsTotal: return "bps-total"
        case .bpsRead: return "bps-read"
        case .bpsWrite: return "bps-write"
        case .iopsTotal: return "iops-total"
        case .iopsRead: return "iops-read"
        case .iopsWrite: return "iops-write"
        }
    }

    /// The name in block_set_io_throttle's arguments (`bps`, `iops_rd`, ...).
    public var legacyName: String {
        switch self {
        case .bpsTotal: return "bps"
        case .bpsRead: return "bps_rd"
        case .bpsWrite: return "bps_wr"
        case .iopsTotal: return "iops"
        case .iopsRead: return "iops_rd"
        case .iopsWrite: return "iops_wr"
        }
    }
}

/// One bucket's limit: `average` units per second, bursts of up to `max` units per second
/// for `maxLength` seconds (QEMU's LeakyBucket avg, max, burst_length). 0 means no limit.
public struct ThrottleBucketLimit: Sendable, Equatable {
    public var average: UInt64 = 0
    public var max: UInt64 = 0
    public var maxLength: UInt64 = 1
    public init(average: UInt64 = 0, max: UInt64 = 0, maxLength: UInt64 = 1) {
        self.average = average
        self.max = max
        self.maxLength = maxLength
    }
}

/// A throttle group's limits (QEMU's ThrottleLimits): bytes and operations per second,
/// in total or per direction, with bursts, and `iopsSize` (a request larger than it
/// counts as several operations). All zero: no limit.
public struct ThrottleLimits: Sendable, Equatable {
    public var buckets: [ThrottleBucketLimit] = Array(repeating: ThrottleBucketLimit(), count: ThrottleBucketKind.allCases.count)
    public var iopsSize: UInt64 = 0

    /// QEMU's THROTTLE_VALUE_MAX: the largest rate or burst accepted.
    public static let valueMax: UInt64 = 1_000_000_000_000_000

    public init() {}

    public subscript(kind: ThrottleBucketKind) -> ThrottleBucketLimit {
        get { buckets[kind.rawValue] }
        set { buckets[kind.rawValue] = newValue }
    }

    /// Whether no bucket limits anything.
    public var isUnlimited: Bool { buckets.allSatisfy { $0.average == 0 } }

    /// What is wrong with these limits, in QEMU's words (util/throttle.c's checks), or nil.
    public var validationError: String? {
        func both(_ total: ThrottleBucketKind, _ read: ThrottleBucketKind, _ write: ThrottleBucketKind,
                  _ value: (ThrottleBucketLimit) -> UInt64) -> Bool {
            value(self[total]) != 0 && (value(self[read]) != 0 || value(self[write]) != 0)
        }
        if both(.bpsTotal, .bpsRead, .bpsWrite, \.average) || both(.iopsTotal, .iopsRead, .iopsWrite, \.average)
            || both(.bpsTotal, .bpsRead, .bpsWrite, \.max) || both(.iopsTotal, .iopsRead, .iopsWrite, \.max) {
            return "bps/iops/max total values and read/write values cannot be used at the same time"
        }
        if iopsSize != 0 && self[.iopsTotal].average == 0 && self[.iopsRead].average == 0 && self[.iopsWrite].average == 0 {
            return "iops size requires an iops value to be set"
        }
        for bucket in buckets {
            if bucket.average > Self.valueMax || bucket.max > Self.valueMax {
                return "bps/iops/max values must be within [0, \(Self.valueMax)]"
            }
            if bucket.maxLength == 0 { return "the burst length cannot be 0" }
            if bucket.maxLength > 1 && bucket.max == 0 { return "burst length set without burst rate" }
            if bucket.max != 0 && bucket.maxLength > Self.valueMax / bucket.max {
                return "burst length too high for this burst rate"
            }
            if bucket.max != 0 && bucket.average == 0 { return "bps_max/iops_max require corresponding bps/iops values" }
            if bucket.max != 0 && bucket.max < bucket.average { return "bps_max/iops_max cannot be lower than bps/iops" }
        }
        return nil
    }
}

/// `driver=throttle`: a filter over node `child` whose requests share the limits of the
/// throttle group `group` (QEMU's throttle filter: `throttle-group=`, `file=`).
public struct ThrottleFilterOptions: Sendable, Equatable {
    public var child: NodeName
    public var group: String
    public init(child: NodeName, group: String) {
        self.child = child
        self.group = group
    }
}

/// `--object throttle-group,id=ID,...`: a named set of limits throttle nodes share.
public struct ThrottleGroupOptions: Sendable, Equatable {
    public var id: String
    public var limits: ThrottleLimits
    public init(id: String, limits: ThrottleLimits = ThrottleLimits()) {
        self.id = id
        self.limits = limits
    }
}
