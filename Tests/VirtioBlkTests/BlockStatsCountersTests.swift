import BlockCommon
import Testing
@testable import VirtioBlk

/// The per-queue request counters and what a snapshot of them says.
@Suite struct BlockStatsCountersTests {
    @Test func latencyBinsAreLog2FromOneMicrosecondOn() {
        #expect(BlockLatencyBuckets.boundariesNs.count == 27)
        #expect(BlockLatencyBuckets.boundariesNs.first == 1024 && BlockLatencyBuckets.boundariesNs.last == 1 << 36)
        #expect(BlockLatencyBuckets.binCount == 28)
        let cases: [(UInt64, Int)] = [(0, 0), (1, 0), (1023, 0), (1024, 1), (2047, 1), (2048, 2), (1 << 20, 11),
                                      ((1 << 36) - 1, 26), (1 << 36, 27), (UInt64.max, 27)]
        for (ns, bin) in cases { #expect(BlockLatencyBuckets.bin(forNanoseconds: ns) == bin, "\(ns) ns") }
        // Each boundary opens its bin, as QEMU's histogram reads: bin i = [boundary i-1, boundary i).
        for (i, boundary) in BlockLatencyBuckets.boundariesNs.enumerated() {
            #expect(BlockLatencyBuckets.bin(forNanoseconds: boundary) == i + 1)
            #expect(BlockLatencyBuckets.bin(forNanoseconds: boundary - 1) == i)
        }
    }

    @Test func completedRequestsCountOperationsBytesTimeAndTheirBin() {
        let table = BlockStatsTable(queueCount: 2)
        let counters = table.counters(queue: 1)
        counters.submitted()
        counters.submitted()
        #expect(table.snapshot()[1].inFlight == 2)
        counters.completed(.read, bytes: 4096, end: 0, failed: false, startedAt: 1_000, now: 3_048)
        counters.completed(.write, bytes: 8192, end: 1 << 20, failed: false, startedAt: 5_000, now: 5_500)
        let stats = table.snapshot()
        #expect(stats[0] == BlockIOStats(), "queue 0 saw nothing")
        let queue = stats[1]
        #expect(queue.inFlight == 0)
        #expect(queue[.read].operations == 1 && queue[.read].bytes == 4096 && queue[.read].totalTimeNs == 2048)
        #expect(queue[.read].latencyHistogram[2] == 1 && queue[.read].latencyHistogram.reduce(0, +) == 1)
        #expect(queue[.write].operations == 1 && queue[.write].bytes == 8192 && queue[.write].totalTimeNs == 500)
        #expect(queue[.write].latencyHistogram[0] == 1)
        #expect(queue.wrHighestOffset == 1 << 20)
        #expect(queue.lastCompletionNs == 5_500)
        #expect(queue.idleTimeNs(now: 6_000) == 500)
        #expect(queue[.flush] == BlockOperationStats())
    }

    @Test func failedInvalidAndAnsweredRequestsAreCountedApart() {
        let table = BlockStatsTable(queueCount: 1)
        let counters = table.counters(queue: 0)
        counters.completed(.write, bytes: 4096, end: 8192, failed: false, startedAt: 0, now: 10)
        counters.submitted()
        counters.completed(.write, bytes: 4096, end: 1 << 30, failed: true, startedAt: 0, now: 3_000)
        counters.completed(.discard, bytes: 1 << 20, end: 4096, failed: false, startedAt: 0, now: 20)
        counters.invalid(.read)
        counters.invalid(.read)
        counters.invalid(.other)
        counters.failedAtOnce(.flush, at: 40)
        counters.answeredAtOnce(.other, bytes: 20, at: 50)
        let stats = table.snapshot()[0]
        #expect(stats[.write].operations == 1 && stats[.write].bytes == 4096 && stats[.write].failed == 1)
        #expect(stats[.write].totalTimeNs == 3_010, "failed requests' time counts (account_failed)")
        #expect(stats.wrHighestOffset == 8192, "a failed write or a lower end does not move it")
        #expect(stats[.discard].operations == 1 && stats[.discard].bytes == 1 << 20)
        #expect(stats[.read].invalid == 2 && stats[.read].operations == 0)
        #expect(stats[.flush].failed == 1 && stats[.flush].operations == 0)
        #expect(stats[.other].invalid == 1 && stats[.other].operations == 1 && stats[.other].bytes == 20)
        #expect(stats.lastCompletionNs == 50)
        #expect(stats.inFlight == 0)
    }

    @Test func aQueueIndexOutOfRangeCountsOutsideTheQueues() {
        let table = BlockStatsTable(queueCount: 1)
        table.counters(queue: 7).invalid(.read)
        table.counters(queue: -1).invalid(.read)
        #expect(table.snapshot() == [BlockIOStats()])
    }

    @Test func sumsAddEveryFigureAndKeepTheHighestOffsetAndLastCompletion() {
        let table = BlockStatsTable(queueCount: 2)
        table.counters(queue: 0).submitted()
        table.counters(queue: 0).completed(.read, bytes: 512, end: 0, failed: false, startedAt: 0, now: 100)
        for _ in 0..<3 { table.counters(queue: 1).submitted() }
        table.counters(queue: 1).completed(.read, bytes: 1024, end: 0, failed: false, startedAt: 0, now: 90)
        table.counters(queue: 1).completed(.writeZeroes, bytes: 4096, end: 65536, failed: false, startedAt: 0, now: 95)
        let export = BlockExportStats(exportID: "e0", nodeName: "n0",
                                      queues: table.snapshot().enumerated().map { BlockQueueStats(queue: $0, stats: $1) })
        let total = export.total
        #expect(total[.read].operations == 2 && total[.read].bytes == 1536 && total[.read].totalTimeNs == 190)
        #expect(total[.writeZeroes].bytes == 4096 && total.wrHighestOffset == 65536)
        #expect(total.lastCompletionNs == 100 && total.inFlight == 1)
    }

    @Test func requestTypesMapToTheirKinds() {
        #expect(VirtioBlkRequestHandler.statsKind(ofRequestType: VirtioBlkRequestType.read) == .read)
        #expect(VirtioBlkRequestHandler.statsKind(ofRequestType: VirtioBlkRequestType.write) == .write)
        #expect(VirtioBlkRequestHandler.statsKind(ofRequestType: VirtioBlkRequestType.flush) == .flush)
        #expect(VirtioBlkRequestHandler.statsKind(ofRequestType: VirtioBlkRequestType.discard) == .discard)
        #expect(VirtioBlkRequestHandler.statsKind(ofRequestType: VirtioBlkRequestType.writeZeroes) == .writeZeroes)
        #expect(VirtioBlkRequestHandler.statsKind(ofRequestType: VirtioBlkRequestType.getId) == .other)
        #expect(VirtioBlkRequestHandler.statsKind(ofRequestType: 99) == .other)
    }
}
