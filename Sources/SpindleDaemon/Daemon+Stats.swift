import BlockCommon
import ControlThread
import Glibc

/// query-blockstats' figures (and what a metrics scrape samples): the exports' per-queue
/// counters, each queue labelled with the IOThread serving it, and per named node the sum
/// of the exports using it now.
extension Daemon {
    public func queryBlockStats() -> BlockStatsReport {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let nowNs = UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
        let exportStats = exports.map { export in
            let id = export.options.id
            let queues = export.queueStats().enumerated().map { index, stats in
                BlockQueueStats(queue: index, iothread: placements.placement(of: QueueKey(export: id, queue: index))?.thread,
                                stats: stats)
            }
            return BlockExportStats(exportID: id, nodeName: graph.rootNode(of: export.backend).map { "\($0.name)" },
                                    queues: queues)
        }
        let nodeStats = graph.nodes.values.map { "\($0.name)" }.sorted().map { name in
            let users = exportStats.filter { $0.nodeName == name }
            let sum = users.reduce(into: BlockIOStats()) { $0.add($1.total) }
            return BlockNodeStats(nodeName: name, exports: users.map(\.exportID), stats: sum)
        }
        return BlockStatsReport(exports: exportStats, nodes: nodeStats, nowNs: nowNs)
    }
}
