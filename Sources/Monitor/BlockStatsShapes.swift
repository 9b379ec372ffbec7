import BlockCommon

/// query-blockstats' JSON: QEMU's BlockStats / BlockDeviceStats (qapi/block-core.json, the
/// members QEMU 7.2 sends) from a `BlockStatsReport`, plus Spindle's own `x-` members.
///
/// As QEMU's virtio-blk counts them: write-zeroes requests are in the `wr_` figures,
/// discards are `unmap_`, GET_ID and unknown types only in `x-other`. Spindle never merges
/// requests (`*_merged` are 0) and counts invalid and failed requests (`account_*` true);
/// `timed_stats` (block-set-io-accounting intervals) is always empty.
enum BlockStatsShapes {
    /// One export (QEMU's default mode): `device` is "" (an export has no qdev id), the node
    /// it uses now (absent once revoked), its figures, and Spindle's per-export members:
    /// `x-export-id`, `x-in-flight`, `x-write-zeroes` and `x-other` (the requests folded
    /// into `wr_*` or not shown there), `x-queues` (each queue's own BlockDeviceStats, its
    /// IOThread while it runs, its in-flight count).
    static func export(_ export: BlockExportStats, now: UInt64, histograms: Bool) -> JSONValue {
        let total = export.total
        var object = JSONObject([
            "device": .string(""),
            "stats": stats(total, now: now, histograms: histograms),
            "x-export-id": .string(export.exportID),
            "x-in-flight": .integer(total.inFlight),
            "x-write-zeroes": figures(total[.writeZeroes]),
            "x-other": figures(total[.other]),
            "x-queues": .array(export.queues.map { queue in
                var entry = JSONObject([
                    "queue": .integer(queue.queue),
                    "in-flight": .integer(queue.stats.inFlight),
                    "stats": stats(queue.stats, now: now, histograms: histograms),
                ])
                if let thread = queue.iothread { entry["iothread"] = .string(thread) }
                return .object(entry)
            }),
        ])
        if let node = export.nodeName { object["node-name"] = .string(node) }
        return .object(object)
    }

    /// One named node (`query-nodes`): its name, the sum of the exports using it now, and
    /// which exports those are (`x-exports`).
    static func node(_ node: BlockNodeStats, now: UInt64, histograms: Bool) -> JSONValue {
        .object([
            "node-name": .string(node.nodeName),
            "stats": stats(node.stats, now: now, histograms: histograms),
            "x-exports": .array(node.exports.map { .string($0) }),
        ])
    }

    /// BlockDeviceStats.
    static func stats(_ stats: BlockIOStats, now: UInt64, histograms: Bool) -> JSONValue {
        let read = stats[.read], flush = stats[.flush], unmap = stats[.discard]
        var write = stats[.write]
        write.add(stats[.writeZeroes])
        var object = JSONObject([
            "rd_bytes": .integer(read.bytes),
            "wr_bytes": .integer(write.bytes),
            "unmap_bytes": .integer(unmap.bytes),
            "rd_operations": .integer(read.operations),
            "wr_operations": .integer(write.operations),
            "flush_operations": .integer(flush.operations),
            "unmap_operations": .integer(unmap.operations),
            "rd_total_time_ns": .integer(read.totalTimeNs),
            "wr_total_time_ns": .integer(write.totalTimeNs),
            "flush_total_time_ns": .integer(flush.totalTimeNs),
            "unmap_total_time_ns": .integer(unmap.totalTimeNs),
            "wr_highest_offset": .integer(stats.wrHighestOffset),
            "rd_merged": .integer(read.merged),
            "wr_merged": .integer(write.merged),
            "unmap_merged": .integer(unmap.merged),
            "failed_rd_operations": .integer(read.failed),
            "failed_wr_operations": .integer(write.failed),
            "failed_flush_operations": .integer(flush.failed),
            "failed_unmap_operations": .integer(unmap.failed),
            "invalid_rd_operations": .integer(read.invalid),
            "invalid_wr_operations": .integer(write.invalid),
            "invalid_flush_operations": .integer(flush.invalid),
            "invalid_unmap_operations": .integer(unmap.invalid),
            "account_invalid": .bool(true),
            "account_failed": .bool(true),
            "timed_stats": .array([]),
        ])
        if let idle = stats.idleTimeNs(now: now) { object["idle_time_ns"] = .integer(idle) }
        if histograms {
            object["rd_latency_histogram"] = histogram(read)
            object["wr_latency_histogram"] = histogram(write)
            object["flush_latency_histogram"] = histogram(flush)
        }
        return .object(object)
    }

    /// BlockLatencyHistogramInfo: `boundaries` (ns) and one more `bins` than boundaries.
    static func histogram(_ figures: BlockOperationStats) -> JSONValue {
        .object([
            "boundaries": .array(BlockLatencyBuckets.boundariesNs.map { .integer($0) }),
            "bins": .array(figures.latencyHistogram.map { .integer($0) }),
        ])
    }

    /// Spindle's per-kind figures for the kinds QEMU's shape folds away.
    static func figures(_ figures: BlockOperationStats) -> JSONValue {
        .object([
            "operations": .integer(figures.operations),
            "bytes": .integer(figures.bytes),
            "failed": .integer(figures.failed),
            "invalid": .integer(figures.invalid),
            "total_time_ns": .integer(figures.totalTimeNs),
        ])
    }
}
