import BlockCommon
import ControlThread
import Monitor
import SpindleTestSupport
import Testing
import VhostUserFrontend
@testable import SpindleDaemon

/// query-blockstats' figures against exactly what a frontend in this process did, through a
/// real export socket, and kept across a queue move, a resize, a reconnect, a mirror pivot
/// and a revoke.
@Suite(.serialized) struct BlockStatsDaemonTests {
    /// One request in slot 0, waited for (5 s at most); its status byte. `range` makes the
    /// data a discard / write-zeroes segment.
    @ControlActor
    static func run(_ queue: inout BlkQueue, _ type: BlkRequestType, sector: UInt64 = 0, bytes: Int = 0,
                    range: (sector: UInt64, count: UInt32)? = nil) async throws -> UInt8 {
        queue.prepare(slot: 0, type: type, sector: sector, byteCount: range == nil ? bytes : 16)
        if let range {
            let segment = queue.data(of: 0)
            segment.storeBytes(of: range.sector.littleEndian, as: UInt64.self)
            segment.storeBytes(of: range.count.littleEndian, toByteOffset: 8, as: UInt32.self)
            segment.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
        }
        queue.submit(slot: 0)
        _ = queue.ring.publishAvailable()
        queue.kick()
        for _ in 0..<500 where queue.ring.pendingUsedCount() == 0 { try await Task.sleep(nanoseconds: 10_000_000) }
        guard (queue.ring.pendingUsedCount() ?? 0) > 0 else { throw DaemonError("\(type) request did not complete within 5 s") }
        _ = queue.ring.popUsed()
        return queue.status(of: 0)
    }

    @ControlActor
    static func exportStats(_ daemon: Daemon) throws -> BlockExportStats {
        try #require(daemon.queryBlockStats().exports.first { $0.exportID == "e0" })
    }

    @ControlActor
    static func waitForJob(_ daemon: Daemon, _ id: String, status: String?) async throws {
        for _ in 0..<1000 {
            let job = daemon.queryJobs().first { $0.id == id }
            if job?.status == status { return }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        throw DaemonError("job \(id) never reached \(status ?? "its end"): \(daemon.queryJobs())")
    }

    @Test @ControlActor func countsMatchWhatTheFrontendDidAcrossMovesResizesReconnectsPivotsAndRevocation() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.objectAdd(iothreadObject("iot0"))
        try daemon.objectAdd(iothreadObject("iot1"))
        try daemon.blockdevAdd(nullNode("n0"))  // 64 MiB
        var options = exportOptions("e0", node: "n0", in: directory, iothread: "iot0")
        options.numQueues = 2
        try await daemon.blockExportAdd(options)
        var stats = try Self.exportStats(daemon)
        #expect(stats.nodeName == "n0" && stats.queues.map(\.queue) == [0, 1] && stats.total == BlockIOStats(), "nothing counted yet")

        var frontend = try await InProcessFrontend.connect(to: directory.file("e0.sock"), queues: 1)
        var queue = frontend.frontend.queues[0]
        for i in 0..<5 { #expect(try await Self.run(&queue, .read, sector: UInt64(i) * 8, bytes: 4096) == BlkStatus.ok) }
        for i in 0..<3 { #expect(try await Self.run(&queue, .write, sector: 100 + UInt64(i) * 4, bytes: 2048) == BlkStatus.ok) }
        for _ in 0..<2 { #expect(try await Self.run(&queue, .flush) == BlkStatus.ok) }
        #expect(try await Self.run(&queue, .discard, range: (sector: 2048, count: 2048)) == BlkStatus.ok)
        #expect(try await Self.run(&queue, .writeZeroes, range: (sector: 4096, count: 128)) == BlkStatus.ok)
        #expect(try await Self.run(&queue, .getID, bytes: 20) == BlkStatus.ok)
        #expect(try await Self.run(&queue, .read, sector: (64 << 20) / 512, bytes: 4096) == BlkStatus.ioError, "past the end")

        stats = try Self.exportStats(daemon)
        var total = stats.total
        #expect(total[.read].operations == 5 && total[.read].bytes == 5 * 4096 && total[.read].invalid == 1 && total[.read].failed == 0)
        #expect(total[.write].operations == 3 && total[.write].bytes == 3 * 2048)
        #expect(total[.flush].operations == 2 && total[.flush].bytes == 0)
        #expect(total[.discard].operations == 1 && total[.discard].bytes == 1 << 20)
        #expect(total[.writeZeroes].operations == 1 && total[.writeZeroes].bytes == 128 * 512)
        #expect(total[.other].operations == 1 && total[.other].bytes == 20)
        #expect(total.wrHighestOffset == (4096 + 128) * 512, "the write-zeroes' end is the highest")
        #expect(total.inFlight == 0 && total.lastCompletionNs != nil)
        #expect(total[.read].latencyHistogram.reduce(0, +) == 5 && total[.write].latencyHistogram.reduce(0, +) == 3)
        #expect(stats.queues[0].iothread == "iot0" && stats.queues[0].stats == total, "all on queue 0")
        #expect(stats.queues[1].iothread == nil && stats.queues[1].stats == BlockIOStats(), "queue 1 never ran")

        // x-queue-move: the queue goes on counting on its new thread.
        try await daemon.moveQueue(exportID: "e0", queue: 0, iothread: "iot1")
        for _ in 0..<2 { #expect(try await Self.run(&queue, .read, sector: 0, bytes: 4096) == BlkStatus.ok) }
        stats = try Self.exportStats(daemon)
        #expect(stats.total[.read].operations == 7 && stats.queues[0].iothread == "iot1")

        // block_resize: a write past the old end counts, and moves the highest offset.
        _ = try await daemon.blockResize(.device("e0"), size: 128 << 20)
        #expect(try await Self.run(&queue, .write, sector: 200_000, bytes: 4096) == BlkStatus.ok)
        total = try Self.exportStats(daemon).total
        #expect(total[.write].operations == 4 && total[.write].bytes == 3 * 2048 + 4096)
        #expect(total.wrHighestOffset == 200_000 * 512 + 4096)

        // A frontend that goes away (QEMU killed) and one that connects again: the export
        // keeps its totals.
        frontend.frontend.hangUp()
        frontend = try await InProcessFrontend.connect(to: directory.file("e0.sock"), queues: 1)
        queue = frontend.frontend.queues[0]
        #expect(try await Self.run(&queue, .flush) == BlkStatus.ok)
        total = try Self.exportStats(daemon).total
        #expect(total[.flush].operations == 3 && total[.read].operations == 7 && total[.write].operations == 4)

        // A mirror pivot moves the export to n1; it keeps its figures and goes on counting.
        try daemon.blockdevAdd(nullNode("n1", size: 128 << 20))
        try await daemon.blockdevMirror(MirrorRequest(jobID: "m0", device: "n0", target: "n1"))
        try await Self.waitForJob(daemon, "m0", status: "ready")
        #expect(try await Self.run(&queue, .write, sector: 8, bytes: 4096) == BlkStatus.ok, "a write while mirroring")
        try daemon.jobCommand(.complete, id: "m0")
        try await Self.waitForJob(daemon, "m0", status: nil)
        #expect(try await Self.run(&queue, .read, sector: 8, bytes: 4096) == BlkStatus.ok)
        stats = try Self.exportStats(daemon)
        #expect(stats.nodeName == "n1")
        #expect(stats.total[.read].operations == 8 && stats.total[.write].operations == 5 && stats.total[.flush].operations == 3)
        let nodes = daemon.queryBlockStats().nodes
        #expect(nodes.map(\.nodeName) == ["n0", "n1"])
        #expect(nodes.first?.exports == [] && nodes.first?.stats == BlockIOStats(), "nothing uses n0 now")
        #expect(nodes.last?.exports == ["e0"] && nodes.last?.stats[.read].operations == 8)

        // drive_del: later requests fail, and are counted as failed (not invalid).
        try await daemon.revokeExport(id: "e0")
        #expect(try await Self.run(&queue, .read, sector: 0, bytes: 4096) == BlkStatus.ioError)
        #expect(try await Self.run(&queue, .write, sector: 0, bytes: 4096) == BlkStatus.ioError)
        #expect(try await Self.run(&queue, .flush) == BlkStatus.ioError)
        stats = try Self.exportStats(daemon)
        total = stats.total
        #expect(stats.nodeName == nil)
        #expect(total[.read].failed == 1 && total[.write].failed == 1 && total[.flush].failed == 1)
        #expect(total[.read].operations == 8 && total[.read].invalid == 1 && total[.write].invalid == 0)
        #expect(total.inFlight == 0)

        try await daemon.blockExportDel(id: "e0", mode: .hard)
        #expect(daemon.queryBlockStats().exports.isEmpty)
        await daemon.shutdown()
        _ = frontend
    }
}
