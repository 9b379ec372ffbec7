import BlockCommon
import SpindleDaemon

/// query-blockstats' figures per export queue (labels `export`, `node`, `queue`, `iothread`;
/// `op` for the operation type): summed over queues they are the export's QMP figures, except
/// that here every operation type has its own series (QMP folds write-zeroes into `wr_`).
/// The latency histograms are per export (summed over its queues), one per operation type
/// that has seen a request, with the daemon's fixed log2 bounds (1.024 µs ... ~69 s).
enum BlockStatsMetrics {
    static func write(_ sample: DaemonMetricsSample, into writer: MetricFamilyWriter) {
        let report = sample.blockStats
        for export in report.exports {
            let node = export.nodeName ?? ""
            for queue in export.queues {
                let labels = [("export", export.exportID), ("node", node), ("queue", "\(queue.queue)"),
                              ("iothread", queue.iothread ?? "")]
                for operation in BlockStatsOperation.allCases {
                    let stats = queue.stats[operation]
                    let opLabels = labels + [("op", operation.description)]
                    writer.counter("spindle_block_operations_total", help: "Requests completed successfully, by operation type.",
                                   labels: opLabels, stats.operations)
                    writer.counter("spindle_block_bytes_total", help: "Bytes of successful requests, by operation type.",
                                   labels: opLabels, stats.bytes)
                    writer.counter("spindle_block_failed_total", help: "Requests the image failed or a revoked export refused.",
                                   labels: opLabels, stats.failed)
                    writer.counter("spindle_block_invalid_total", help: "Requests refused before the image (past the end, unaligned, unsupported).",
                                   labels: opLabels, stats.invalid)
                    writer.counter("spindle_block_time_seconds_total", help: "Time from leaving the ring to completion, summed, succeeded and failed requests.",
                                   labels: opLabels, seconds: Double(stats.totalTimeNs) / 1e9)
                }
                writer.gauge("spindle_block_requests_in_flight", help: "Requests of this queue at the image now.",
                             labels: labels, Double(queue.stats.inFlight))
            }
            for operation in BlockStatsOperation.allCases {
                let stats = export.total[operation]
                guard stats.latencyHistogram.contains(where: { $0 != 0 }) else { continue }
                writer.histogram("spindle_block_latency_seconds",
                                 help: "Time from leaving the ring to completion, succeeded and failed requests (a latency on a bound counts in the bucket above it).",
                                 labels: [("export", export.exportID), ("node", node), ("op", operation.description)],
                                 upperBounds: BlockLatencyBuckets.boundariesNs.map { Double($0) / 1e9 },
                                 bins: stats.latencyHistogram, sum: Double(stats.totalTimeNs) / 1e9)
            }
            if let idle = export.total.idleTimeNs(now: report.nowNs) {
                writer.gauge("spindle_block_idle_seconds", help: "Time since the export's last completion.",
                             labels: [("export", export.exportID), ("node", node)], Double(idle) / 1e9)
            }
        }
    }
}
