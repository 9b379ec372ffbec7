import BlockCommon
import ControlThread

/// query-blockstats: QEMU's command and arguments, answered from the daemon's counters.
@ControlActor
struct QMPStatsCommands {
    let target: any MonitorCommandTarget

    /// {"query-nodes": bool} (QEMU's: false lists the exports, true every named node) and
    /// Spindle's {"x-latency-histograms": bool} (add rd/wr/flush latency histograms; QEMU
    /// shows them once block-latency-histogram-set configured them).
    func queryBlockStats(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let queryNodes = try arguments.optionalBool("query-nodes") ?? false
        let histograms = try arguments.optionalBool("x-latency-histograms") ?? false
        try arguments.finish()
        let report = target.queryBlockStats()
        if queryNodes {
            return .array(report.nodes.map { BlockStatsShapes.node($0, now: report.nowNs, histograms: histograms) })
        }
        return .array(report.exports.map { BlockStatsShapes.export($0, now: report.nowNs, histograms: histograms) })
    }
}

extension MonitorCommandTarget {
    /// A target that counts nothing (a test double) reports no exports and no nodes.
    public func queryBlockStats() -> BlockStatsReport {
        BlockStatsReport(exports: [], nodes: [], nowNs: 0)
    }
}
