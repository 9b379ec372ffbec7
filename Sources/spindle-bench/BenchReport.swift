import VhostUserFrontend

/// Everything measured in one run, merged over the queues; renders the JSON line and the
/// human summary.
struct BenchReport {
    let options: BenchOptions
    let cpus: [Int]
    let queueSize: Int
    let addressedBytes: UInt64
    let capacityBytes: UInt64?
    let negotiatedFeatures: UInt64
    let protocolFeatures: UInt64
    let results: [QueueResult]
    let histogram: LatencyHistogram
    /// Backend CPU over the main thread's window, if --backend-pid was given.
    let backendCPUMicroseconds: UInt64?
    let backendWindowNanoseconds: UInt64
    /// /proc/stat around the same window.
    let machineBefore: MachineCPUSample?
    let machineAfter: MachineCPUSample?
    /// With --dirty-log: the harvester's counts.
    let harvest: HarvestResult?
    /// A paired run's second device and ratios (--pair-socket); the keys above are the first's.
    var pair: PairedResult? = nil

    private var completed: UInt64 { results.reduce(0) { $0 + $1.completed } }
    private var bytes: UInt64 { results.reduce(0) { $0 + $1.bytes } }
    private var failed: UInt64 { results.reduce(0) { $0 + $1.failedRequests } }
    private var kicks: UInt64 { results.reduce(0) { $0 + $1.kicks } }
    private var wakeups: UInt64 { results.reduce(0) { $0 + $1.wakeups } }
    private var callSignals: UInt64 { results.reduce(0) { $0 + $1.callSignals } }
    private var clientCPUNanoseconds: UInt64 { results.reduce(0) { $0 + $1.cpuNanoseconds } }

    /// IOPS: each queue's completions over its own window, summed.
    var iops: Double {
        results.reduce(0.0) { total, result in
            let seconds = Double(result.windowEnd &- result.windowStart) / 1e9
            return total + (seconds > 0 ? Double(result.completed) / seconds : 0)
        }
    }

    /// Seconds of the measured window (the longest queue's).
    var durationSeconds: Double {
        Double(results.map { $0.windowEnd &- $0.windowStart }.max() ?? 0) / 1e9
    }

    var megabytesPerSecond: Double {
        let requests = Double(completed)
        return requests > 0 ? iops * (Double(bytes) / requests) / 1e6 : 0
    }

    /// Requests per second the backend served: with a pair, both devices'.
    private var backendRequestRate: Double { pair?.combinedRate ?? iops }

    private func perRequest(_ value: Double) -> Double {
        completed > 0 ? value / Double(completed) : 0
    }

    var json: String {
        var line = JSONLine()
        line.add("tool", "spindle-bench")
        line.add("socket", options.socket)
        line.add("rw", options.pattern.rawValue)
        line.add("rwmixread", options.pattern == .randrw ? options.readPercent : (options.pattern == .read || options.pattern == .randread ? 100 : 0))
        line.add("bs", options.blockSize)
        line.add("iodepth", options.iodepth)
        line.add("queues", options.queues)
        line.add("cpus", cpus)
        line.add("completion", options.completion.rawValue)
        line.add("event_idx", options.eventIndex)
        line.add("indirect", options.indirect)
        line.add("ring", options.packed ? "packed" : "split")
        line.add("queue_size", queueSize)
        line.add("runtime_s", options.runtimeSeconds, decimals: 3)
        line.add("ramp_s", options.rampSeconds, decimals: 3)
        line.add("size", addressedBytes)
        if let capacityBytes { line.add("capacity", capacityBytes) } else { line.addNull("capacity") }
        if let pid = options.backendPID { line.add("backend_pid", Int(pid)) } else { line.addNull("backend_pid") }
        line.add("features", "0x" + String(negotiatedFeatures, radix: 16))
        line.add("protocol_features", "0x" + String(protocolFeatures, radix: 16))
        line.add("duration_s", durationSeconds, decimals: 6)
        line.add("ios", completed)
        line.add("errors", failed)
        line.add("iops", iops, decimals: 1)
        line.add("mb_s", megabytesPerSecond, decimals: 2)
        var latency = JSONLine()
        latency.add("min", micro(histogram.count > 0 ? histogram.minimum : 0), decimals: 3)
        latency.add("mean", histogram.mean / 1000, decimals: 3)
        latency.add("p50", micro(histogram.percentile(50)), decimals: 3)
        latency.add("p90", micro(histogram.percentile(90)), decimals: 3)
        latency.add("p99", micro(histogram.percentile(99)), decimals: 3)
        latency.add("p99_9", micro(histogram.percentile(99.9)), decimals: 3)
        latency.add("max", micro(histogram.maximum), decimals: 3)
        line.add("lat_us", object: latency)
        let clientSeconds = Double(clientCPUNanoseconds) / 1e9
        line.add("client_cpu_s", clientSeconds, decimals: 6)
        line.add("client_cpu_pct", durationSeconds > 0 ? 100 * clientSeconds / durationSeconds : 0, decimals: 1)
        line.add("client_cpu_us_per_req", perRequest(Double(clientCPUNanoseconds) / 1000), decimals: 4)
        if let backend = backendCPUMicroseconds {
            let window = Double(backendWindowNanoseconds) / 1e9
            line.add("backend_cpu_s", Double(backend) / 1e6, decimals: 3)
            line.add("backend_cpu_pct", window > 0 ? 100 * Double(backend) / 1e6 / window : 0, decimals: 1)
            // Requests over the backend's sampling window, which is the nominal window.
            let requests = backendRequestRate * window
            line.add("backend_cpu_us_per_req", requests > 0 ? Double(backend) / requests : 0, decimals: 4)
        } else {
            line.addNull("backend_cpu_s")
            line.addNull("backend_cpu_pct")
            line.addNull("backend_cpu_us_per_req")
        }
        if let before = machineBefore, let after = machineAfter, backendWindowNanoseconds > 0 {
            let window = Double(backendWindowNanoseconds) / 1e9
            let busy = Double(after.busyMicroseconds &- before.busyMicroseconds) / 1e6
            line.add("machine_busy_pct", 100 * busy / window, decimals: 1)
            line.add("machine_steal_pct", 100 * Double(after.stealMicroseconds &- before.stealMicroseconds) / 1e6 / window, decimals: 1)
            // What neither the client nor the backend used: the noise estimate.
            let ours = clientSeconds + Double(backendCPUMicroseconds ?? 0) / 1e6
            line.add("other_cpu_pct", options.backendPID == nil ? .nan : max(0, 100 * (busy - ours) / window), decimals: 1)
        }
        line.add("kicks_per_req", perRequest(Double(kicks)), decimals: 4)
        line.add("wakeups_per_req", perRequest(Double(wakeups)), decimals: 4)
        line.add("calls_per_req", perRequest(Double(callSignals)), decimals: 4)
        line.add("dirty_log", options.dirtyLog)
        if let harvest {
            line.add("harvest_ms", options.harvestMilliseconds)
            line.add("harvests", harvest.harvests)
            line.add("dirty_pages_harvested", harvest.pages)
            line.add("harvest_us_mean", harvest.harvests > 0 ? Double(harvest.totalNanoseconds) / Double(harvest.harvests) / 1000 : 0, decimals: 3)
            line.add("harvest_us_max", Double(harvest.maxNanoseconds) / 1000, decimals: 3)
        }
        if let pair { line.add("pair", object: pair.json) }
        return line.text
    }

    var summary: String {
        let f = JSONLine.fixed
        var text = "spindle-bench: \(options.pattern.rawValue) bs=\(options.blockSize) iodepth=\(options.iodepth) queues=\(options.queues) completion=\(options.completion.rawValue) event-idx=\(options.eventIndex ? "on" : "off") indirect=\(options.indirect ? "on" : "off") ring=\(options.packed ? "packed" : "split")\n"
        text += "  \(f(iops / 1000, 1)) kIOPS, \(f(megabytesPerSecond, 1)) MB/s, \(completed) requests in \(f(durationSeconds, 2)) s, \(failed) errors\n"
        text += "  latency us: min \(f(micro(histogram.minimum), 2)) mean \(f(histogram.mean / 1000, 2)) p50 \(f(micro(histogram.percentile(50)), 2)) p99 \(f(micro(histogram.percentile(99)), 2)) p99.9 \(f(micro(histogram.percentile(99.9)), 2)) max \(f(micro(histogram.maximum), 2))\n"
        let clientSeconds = Double(clientCPUNanoseconds) / 1e9
        text += "  client CPU \(f(durationSeconds > 0 ? 100 * clientSeconds / durationSeconds : 0, 1)) % (\(f(perRequest(Double(clientCPUNanoseconds) / 1000), 3)) us/req)"
        if let backend = backendCPUMicroseconds {
            let window = Double(backendWindowNanoseconds) / 1e9
            let requests = backendRequestRate * window
            text += ", backend CPU \(f(window > 0 ? 100 * Double(backend) / 1e6 / window : 0, 1)) % (\(f(requests > 0 ? Double(backend) / requests : 0, 3)) us/req)"
        }
        if let before = machineBefore, let after = machineAfter, backendWindowNanoseconds > 0 {
            let window = Double(backendWindowNanoseconds) / 1e9
            let busy = Double(after.busyMicroseconds &- before.busyMicroseconds) / 1e6
            text += ", machine busy \(f(100 * busy / window, 1)) % of one CPU"
        }
        text += "\n  per request: \(f(perRequest(Double(kicks)), 3)) kicks, \(f(perRequest(Double(wakeups)), 3)) wakeups, \(f(perRequest(Double(callSignals)), 3)) calls"
        if let harvest {
            let mean = harvest.harvests > 0 ? Double(harvest.totalNanoseconds) / Double(harvest.harvests) / 1000 : 0
            text += "\n  dirty log: \(harvest.harvests) harvests every \(options.harvestMilliseconds) ms, \(harvest.pages) dirty pages, \(f(mean, 1)) us mean per harvest (max \(f(Double(harvest.maxNanoseconds) / 1000, 1)))"
        }
        if let pair { text += "\n" + pair.summary(firstIOPS: iops) }
        return text
    }

    private func micro(_ nanoseconds: UInt64) -> Double { Double(nanoseconds) / 1000 }
}

extension BenchReport {
    /// Whether any request completed with a status other than OK.
    var hasFailedRequests: Bool { failed > 0 || (pair?.result.failedRequests ?? 0) > 0 }
}
