/// A log-linear latency histogram in nanoseconds (HDR-style): values below 2^7 get one
/// bucket each, every power-of-two range above is split into 128 equal buckets, so any
/// value is known to within 1/128 (< 0.8 %). The buckets are allocated once; recording
/// is a few integer operations and one increment, no allocation.
///
/// One per thread; `merge` adds another thread's counts after the run.
struct LatencyHistogram: @unchecked Sendable {
    static let subBucketBits = 7
    static let subBucketCount = 1 << subBucketBits
    static let bucketCount = (64 - subBucketBits + 1) * subBucketCount

    private let buckets: UnsafeMutablePointer<UInt64>
    private(set) var count: UInt64 = 0
    private(set) var sum: UInt64 = 0
    private(set) var minimum: UInt64 = .max
    private(set) var maximum: UInt64 = 0

    init() {
        buckets = .allocate(capacity: Self.bucketCount)
        buckets.initialize(repeating: 0, count: Self.bucketCount)
    }

    /// Frees the buckets; the histogram must not be used afterwards.
    func deallocate() {
        buckets.deallocate()
    }

    /// Bucket of `value`: the value itself below 2^7, else (octave, top 7 bits after the
    /// leading one).
    @inline(__always)
    static func bucketIndex(_ value: UInt64) -> Int {
        if value < UInt64(subBucketCount) { return Int(value) }
        let msb = 63 - value.leadingZeroBitCount
        let shift = msb - subBucketBits
        return shift * subBucketCount + Int(value >> UInt64(shift))
    }

    /// Smallest value that falls in bucket `index`.
    static func lowerBound(ofBucket index: Int) -> UInt64 {
        if index < 2 * subBucketCount { return UInt64(index) }
        let shift = index / subBucketCount - 1
        return UInt64(index - shift * subBucketCount) << UInt64(shift)
    }

    /// Width of bucket `index` (1 in the linear part).
    static func width(ofBucket index: Int) -> UInt64 {
        index < 2 * subBucketCount ? 1 : UInt64(1) << UInt64(index / subBucketCount - 1)
    }

    @inline(__always)
    mutating func record(_ nanoseconds: UInt64) {
        buckets[Self.bucketIndex(nanoseconds)] &+= 1
        count &+= 1
        sum &+= nanoseconds
        if nanoseconds < minimum { minimum = nanoseconds }
        if nanoseconds > maximum { maximum = nanoseconds }
    }

    mutating func merge(_ other: LatencyHistogram) {
        for i in 0..<Self.bucketCount { buckets[i] &+= other.buckets[i] }
        count &+= other.count
        sum &+= other.sum
        minimum = min(minimum, other.minimum)
        maximum = max(maximum, other.maximum)
    }

    var mean: Double { count == 0 ? 0 : Double(sum) / Double(count) }

    /// The value at `percent` (0-100): the midpoint of the bucket holding that rank,
    /// clamped to the exact minimum and maximum.
    func percentile(_ percent: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = max(1, UInt64((percent / 100 * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for i in 0..<Self.bucketCount {
            seen &+= buckets[i]
            if seen >= rank {
                let middle = Self.lowerBound(ofBucket: i) + (Self.width(ofBucket: i) - 1) / 2
                return min(max(middle, minimum), maximum)
            }
        }
        return maximum
    }
}
