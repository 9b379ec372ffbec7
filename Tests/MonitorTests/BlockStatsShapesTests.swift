import BlockCommon
@testable import Monitor
import SpindleOptions
import Testing

/// query-blockstats' JSON: QEMU's BlockStats members, Spindle's x- members beside them.
@Suite struct BlockStatsShapesTests {
    static let qemuStatsKeys: Set<String> = [
        "rd_bytes", "wr_bytes", "unmap_bytes", "rd_operations", "wr_operations", "flush_operations", "unmap_operations",
        "rd_total_time_ns", "wr_total_time_ns", "flush_total_time_ns", "unmap_total_time_ns", "wr_highest_offset",
        "rd_merged", "wr_merged", "unmap_merged", "failed_rd_operations", "failed_wr_operations",
        "failed_flush_operations", "failed_unmap_operations", "invalid_rd_operations", "invalid_wr_operations",
        "invalid_flush_operations", "invalid_unmap_operations", "account_invalid", "account_failed", "timed_stats",
    ]

    static func report() -> BlockStatsReport {
        var stats = BlockIOStats()
        stats[.read].operations = 5
        stats[.read].bytes = 20480
        stats[.read].invalid = 1
        stats[.write].operations = 3
        stats[.write].bytes = 12288
        stats[.writeZeroes].operations = 1
        stats[.writeZeroes].bytes = 65536
        stats[.writeZeroes].latencyHistogram[3] = 1
        stats[.write].latencyHistogram[1] = 3
        stats[.discard].operations = 2
        stats[.discard].bytes = 1 << 20
        stats[.flush].failed = 1
        stats[.other].operations = 1
        stats.wrHighestOffset = 1 << 21
        stats.inFlight = 2
        stats.lastCompletionNs = 1_000
        let export = BlockExportStats(exportID: "e0", nodeName: "n0",
                                      queues: [BlockQueueStats(queue: 0, iothread: "iot0", stats: stats),
                                               BlockQueueStats(queue: 1, stats: BlockIOStats())])
        return BlockStatsReport(exports: [export],
                                nodes: [BlockNodeStats(nodeName: "n0", exports: ["e0"], stats: export.total)], nowNs: 1_500)
    }

    static func object(_ value: JSONValue) -> JSONObject? {
        guard case .object(let object) = value else { return nil }
        return object
    }

    @Test func anExportIsQEMUsBlockStatsWithWriteZeroesInTheWriteFigures() throws {
        let report = Self.report()
        let entry = try #require(Self.object(BlockStatsShapes.export(report.exports[0], now: report.nowNs, histograms: false)))
        #expect(entry["device"] == .string("") && entry["node-name"] == .string("n0") && entry["qdev"] == nil)
        #expect(entry["x-export-id"] == .string("e0") && entry["x-in-flight"] == .integer(2))
        let stats = try #require(entry["stats"].flatMap(Self.object))
        #expect(Set(stats.entries.map(\.key)) == Self.qemuStatsKeys.union(["idle_time_ns"]))
        #expect(stats["rd_operations"] == .integer(5) && stats["rd_bytes"] == .integer(20480))
        #expect(stats["invalid_rd_operations"] == .integer(1))
        #expect(stats["wr_operations"] == .integer(4) && stats["wr_bytes"] == .integer(12288 + 65536))
        #expect(stats["unmap_operations"] == .integer(2) && stats["unmap_bytes"] == .integer(1 << 20))
        #expect(stats["failed_flush_operations"] == .integer(1) && stats["flush_operations"] == .integer(0))
        #expect(stats["wr_highest_offset"] == .integer(1 << 21) && stats["idle_time_ns"] == .integer(500))
        #expect(stats["account_invalid"] == .bool(true) && stats["timed_stats"] == .array([]))
        let zeroes = try #require(entry["x-write-zeroes"].flatMap(Self.object))
        #expect(zeroes["operations"] == .integer(1) && zeroes["bytes"] == .integer(65536))
        #expect(entry["x-other"].flatMap(Self.object)?["operations"] == .integer(1))
        guard case .array(let queues)? = entry["x-queues"] else { Issue.record("no x-queues"); return }
        #expect(queues.count == 2)
        let first = try #require(Self.object(queues[0]))
        #expect(first["queue"] == .integer(0) && first["iothread"] == .string("iot0") && first["in-flight"] == .integer(2))
        let idle = try #require(Self.object(queues[1]))
        #expect(idle["iothread"] == nil, "a queue that does not run has no IOThread")
        #expect(idle["stats"].flatMap(Self.object)?["idle_time_ns"] == nil, "no completion yet: no idle time (as QEMU)")
    }

    @Test func histogramsOnlyWhenAskedInQEMUsShape() throws {
        let report = Self.report()
        let plain = try #require(Self.object(BlockStatsShapes.stats(report.exports[0].total, now: 0, histograms: false)))
        #expect(plain["wr_latency_histogram"] == nil)
        let asked = try #require(Self.object(BlockStatsShapes.stats(report.exports[0].total, now: 0, histograms: true)))
        let write = try #require(asked["wr_latency_histogram"].flatMap(Self.object))
        guard case .array(let boundaries)? = write["boundaries"], case .array(let bins)? = write["bins"] else {
            Issue.record("no boundaries/bins"); return
        }
        #expect(boundaries.count == 27 && bins.count == 28)
        #expect(boundaries.first == .integer(1024))
        #expect(bins[1] == .integer(3) && bins[3] == .integer(1))
        #expect(asked["rd_latency_histogram"] != nil && asked["flush_latency_histogram"] != nil)
    }

    @Test func aNodeEntryHasANodeNameAndNoDevice() throws {
        let report = Self.report()
        let entry = try #require(Self.object(BlockStatsShapes.node(report.nodes[0], now: report.nowNs, histograms: false)))
        #expect(entry["device"] == nil && entry["node-name"] == .string("n0"))
        #expect(entry["x-exports"] == .array([.string("e0")]))
        #expect(entry["stats"].flatMap(Self.object)?["rd_operations"] == .integer(5))
    }
}
