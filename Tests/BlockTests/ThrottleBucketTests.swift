import BlockCommon
import BlockIO
import Testing

/// QEMU's leaky-bucket arithmetic (ThrottleBuckets), driven by a client that sends a
/// request whenever the buckets let it, on a simulated clock.
@Suite struct ThrottleBucketTests {
    static let second: UInt64 = 1_000_000_000

    /// Requests that went in each whole second of `seconds`, for a greedy client.
    static func perSecond(_ limits: ThrottleLimits, seconds: Int, bytes: UInt64 = 4096, isWrite: Bool = false) -> [Int] {
        var buckets = ThrottleBuckets(limits: limits, now: 0)
        var counts = Array(repeating: 0, count: seconds)
        var now: UInt64 = 0
        while now < UInt64(seconds) * second {
            buckets.leak(now: now)
            let wait = buckets.waitNanoseconds(isWrite: isWrite)
            if wait == 0 {
                buckets.account(isWrite: isWrite, bytes: bytes)
                counts[Int(now / second)] += 1
            } else {
                now += wait
            }
        }
        return counts
    }

    static func limits(_ kind: ThrottleBucketKind, _ average: UInt64, max: UInt64 = 0, length: UInt64 = 1) -> ThrottleLimits {
        var limits = ThrottleLimits()
        limits[kind] = ThrottleBucketLimit(average: average, max: max, maxLength: length)
        return limits
    }

    @Test func iopsRateHoldsAfterATenthOfASecondsBurst() {
        let counts = Self.perSecond(Self.limits(.iopsTotal, 5000), seconds: 10)
        // The bucket lets avg/10 through at once (QEMU's default burst), then avg per second.
        #expect((5499...5501).contains(counts[0]), "\(counts)")
        #expect(counts.dropFirst().allSatisfy { (4999...5001).contains($0) }, "\(counts)")
    }

    @Test func bpsRateCountsBytes() {
        let counts = Self.perSecond(Self.limits(.bpsTotal, 20_000_000), seconds: 10)
        let perSecond = 20_000_000 / 4096
        #expect(counts.dropFirst().allSatisfy { abs($0 - perSecond) <= 1 }, "\(counts)")
    }

    @Test func readLimitLeavesWritesAlone() {
        let limits = Self.limits(.iopsRead, 100)
        #expect(Self.perSecond(limits, seconds: 2, isWrite: false)[1] == 100)
        var buckets = ThrottleBuckets(limits: limits, now: 0)
        for _ in 0..<10_000 { buckets.account(isWrite: true, bytes: 4096) }
        #expect(buckets.waitNanoseconds(isWrite: true) == 0)
        #expect(buckets.waitNanoseconds(isWrite: false) == 0, "writes pour nothing into the read bucket")
    }

    /// iops-total=100, iops-total-max=1000 for 2 s: a full second at 1000, back to 100 once
    /// the burst's 2000 operations (beyond what leaked) are used up.
    @Test func burstUpToMaxForMaxLengthSeconds() {
        let counts = Self.perSecond(Self.limits(.iopsTotal, 100, max: 1000, length: 2), seconds: 10)
        #expect((1000...1101).contains(counts[0]), "\(counts)")
        #expect(counts[1] > 100, "still bursting in the second second: \(counts)")
        #expect(counts[1] + counts[0] <= 2000 + 200 + 101, "\(counts)")
        #expect(counts.suffix(6).allSatisfy { (99...101).contains($0) }, "\(counts)")
    }

    @Test func iopsSizeCountsLargeRequestsAsSeveral() {
        var limits = Self.limits(.iopsTotal, 100)
        limits.iopsSize = 4096
        let counts = Self.perSecond(limits, seconds: 3, bytes: 16384)
        #expect(counts.dropFirst().allSatisfy { (24...26).contains($0) }, "\(counts)")
        #expect(Self.perSecond(limits, seconds: 3, bytes: 512)[2] == 100, "smaller requests count as one")
    }

    @Test func waitIsWhatTheBucketNeedsToLeak() {
        var buckets = ThrottleBuckets(limits: Self.limits(.iopsTotal, 10), now: 0)
        buckets.account(isWrite: false, bytes: 1)
        buckets.account(isWrite: false, bytes: 1)
        // Level 2, bucket size 1: one operation over, at 10 per second.
        #expect(buckets.waitNanoseconds(isWrite: false) == 100_000_000)
        buckets.leak(now: 60_000_000)
        #expect(buckets.waitNanoseconds(isWrite: false) == 40_000_000)
        buckets.leak(now: 100_000_000)
        #expect(buckets.waitNanoseconds(isWrite: false) == 0)
    }

    @Test func noLimitsNeverWait() {
        var buckets = ThrottleBuckets(limits: ThrottleLimits(), now: 0)
        for _ in 0..<1000 { buckets.account(isWrite: true, bytes: 1 << 20) }
        #expect(buckets.waitNanoseconds(isWrite: true) == 0 && buckets.waitNanoseconds(isWrite: false) == 0)
    }

    @Test func validationNamesTheProblem() {
        var limits = Self.limits(.iopsTotal, 10)
        #expect(limits.validationError == nil)
        limits[.iopsRead].average = 5
        #expect(limits.validationError == "bps/iops/max total values and read/write values cannot be used at the same time")
        #expect(ThrottleLimits().isUnlimited && !Self.limits(.bpsWrite, 1).isUnlimited)
    }
}
