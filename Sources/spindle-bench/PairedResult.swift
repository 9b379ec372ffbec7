/// The second device of a paired run and the per-pair ratios: the JSON's "pair" object and
/// the summary's "pair:" line. (The first device is reported in the usual keys.)
struct PairedResult {
    let socket: String
    let packed: Bool
    let queueSize: Int
    let negotiatedFeatures: UInt64
    let addressedBytes: UInt64
    /// B's totals over its measured slices (`windowEnd - windowStart`: their summed duration).
    let result: QueueResult
    let histogram: LatencyHistogram
    let sliceMilliseconds: Int
    /// B's rate over A's, one per measured pair of slices.
    let ratios: [Double]
    /// A's totals, for the rate of both together.
    let firstResult: QueueResult

    var statistics: SliceStatistics? { SliceStatistics(ratios) }

    private static func seconds(_ result: QueueResult) -> Double { Double(result.windowEnd &- result.windowStart) / 1e9 }

    /// B's IOPS over its slices.
    var iops: Double {
        let seconds = Self.seconds(result)
        return seconds > 0 ? Double(result.completed) / seconds : 0
    }

    /// Both devices' requests per second of measured slices: what the backend's CPU
    /// (sampled over the whole window, serving both) is divided by.
    var combinedRate: Double {
        let seconds = Self.seconds(result) + Self.seconds(firstResult)
        return seconds > 0 ? Double(result.completed &+ firstResult.completed) / seconds : 0
    }

    private func perRequest(_ value: Double) -> Double {
        result.completed > 0 ? value / Double(result.completed) : 0
    }

    var json: JSONLine {
        var line = JSONLine()
        line.add("socket", socket)
        line.add("ring", packed ? "packed" : "split")
        line.add("queue_size", queueSize)
        line.add("size", addressedBytes)
        line.add("features", "0x" + String(negotiatedFeatures, radix: 16))
        line.add("slice_ms", sliceMilliseconds)
        line.add("duration_s", Self.seconds(result), decimals: 6)
        line.add("ios", result.completed)
        line.add("errors", result.failedRequests)
        line.add("iops", iops, decimals: 1)
        var latency = JSONLine()
        latency.add("min", Double(histogram.count > 0 ? histogram.minimum : 0) / 1000, decimals: 3)
        latency.add("mean", histogram.mean / 1000, decimals: 3)
        latency.add("p50", Double(histogram.percentile(50)) / 1000, decimals: 3)
        latency.add("p99", Double(histogram.percentile(99)) / 1000, decimals: 3)
        latency.add("max", Double(histogram.maximum) / 1000, decimals: 3)
        line.add("lat_us", object: latency)
        line.add("client_cpu_us_per_req", perRequest(Double(result.cpuNanoseconds) / 1000), decimals: 4)
        line.add("kicks_per_req", perRequest(Double(result.kicks)), decimals: 4)
        line.add("wakeups_per_req", perRequest(Double(result.wakeups)), decimals: 4)
        line.add("calls_per_req", perRequest(Double(result.callSignals)), decimals: 4)
        line.add("pairs", ratios.count)
        if let statistics {
            line.add("ratio_median", statistics.median, decimals: 4)
            line.add("ratio_q1", statistics.firstQuartile, decimals: 4)
            line.add("ratio_q3", statistics.thirdQuartile, decimals: 4)
            line.add("ratio_min", statistics.minimum, decimals: 4)
            line.add("ratio_max", statistics.maximum, decimals: 4)
        } else {
            for key in ["ratio_median", "ratio_q1", "ratio_q3", "ratio_min", "ratio_max"] { line.addNull(key) }
        }
        line.add("ratios", ratios, decimals: 4)
        return line
    }

    /// One line: B's IOPS beside A's and the ratio's median, quartiles and range.
    func summary(firstIOPS: Double) -> String {
        let f = JSONLine.fixed
        var text = "  pair: B ring=\(packed ? "packed" : "split") \(f(iops / 1000, 1)) kIOPS vs A \(f(firstIOPS / 1000, 1)) kIOPS, \(result.failedRequests) errors; "
        if let statistics {
            text += "B/A over \(statistics.count) pairs of \(sliceMilliseconds) ms slices: median \(f(statistics.median, 3)), quartiles \(f(statistics.firstQuartile, 3))-\(f(statistics.thirdQuartile, 3)), range \(f(statistics.minimum, 3))-\(f(statistics.maximum, 3))"
        } else {
            text += "no complete pair of slices"
        }
        return text
    }
}
