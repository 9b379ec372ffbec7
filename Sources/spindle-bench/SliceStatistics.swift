/// Median, quartiles and range of a paired run's per-pair ratios (B's IOPS over A's in two
/// adjacent slices). Quantiles interpolate linearly between the sorted values (rank
/// (n - 1) * q), as Python's statistics.quantiles(method="inclusive") and numpy's default do,
/// so bench scripts can pool ratios from several runs and get the same figures.
struct SliceStatistics: Sendable, Equatable {
    let count: Int
    let minimum: Double
    let firstQuartile: Double
    let median: Double
    let thirdQuartile: Double
    let maximum: Double

    /// nil when there are no ratios (no complete pair of slices).
    init?(_ ratios: [Double]) {
        let sorted = ratios.filter(\.isFinite).sorted()
        guard let first = sorted.first, let last = sorted.last else { return nil }
        count = sorted.count
        minimum = first
        maximum = last
        firstQuartile = Self.quantile(sorted, 0.25)
        median = Self.quantile(sorted, 0.5)
        thirdQuartile = Self.quantile(sorted, 0.75)
    }

    /// The q-quantile (0...1) of non-empty ascending `sorted`.
    static func quantile(_ sorted: [Double], _ q: Double) -> Double {
        let rank = Double(sorted.count - 1) * q
        let below = Int(rank.rounded(.down))
        let above = min(below + 1, sorted.count - 1)
        return sorted[below] + (rank - Double(below)) * (sorted[above] - sorted[below])
    }
}
