import ControlThread
import IOThreads
import Monitor
import SpindleTestSupport
import Testing
@testable import SpindleDaemon

/// Where the daemon places queues, as query-iothreads and object-del report it: through the
/// IOThreadProvider calls an export makes, and with a real frontend in this process.
@Suite(.serialized) struct DaemonPlacementTests {
    @Test @ControlActor func providerCallsKeepQueryIOThreadsTrueAndIgnoreStaleStops() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.objectAdd(iothreadObject("iot0"))
        try daemon.objectAdd(iothreadObject("iot1"))
        try daemon.blockdevAdd(nullNode("n0"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory, iothread: "iot0"))
        let ring = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { ring.deallocate() }
        let iot0 = try #require(daemon.ioThread(forExport: "e0", queue: 0, ring: ring))
        let iot1 = try #require(daemon.iothreads["iot1"])
        #expect(iot0.id == "iot0")
        _ = daemon.ioThread(forExport: "e0", queue: 1, ring: ring)
        #expect(queuesByThread(daemon) == ["iot0": ["e0/0", "e0/1"], "iot1": []])
        // A stop reported for a thread that does not serve the queue changes nothing.
        daemon.queueStopped(export: "e0", queue: 0, thread: iot1)
        #expect(queuesByThread(daemon) == ["iot0": ["e0/0", "e0/1"], "iot1": []])
        daemon.queueStopped(export: "e0", queue: 0, thread: iot0)
        #expect(queuesByThread(daemon) == ["iot0": ["e0/1"], "iot1": []])
        daemon.queueStopped(export: "e0", queue: 1, thread: iot0)
        #expect(queuesByThread(daemon) == ["iot0": [], "iot1": []])
        await daemon.shutdown()
    }

    @Test @ControlActor func queueMoveShowsOnTheNewThreadAndHoldsItAgainstObjectDel() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.objectAdd(iothreadObject("iot0"))
        try daemon.objectAdd(iothreadObject("iot1"))
        try daemon.blockdevAdd(nullNode("n0"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory, iothread: "iot0"))
        let frontend = try await InProcessFrontend.connect(to: directory.file("e0.sock"), queues: 2)
        #expect(await waitForQueues(daemon, ["iot0": ["e0/0", "e0/1"], "iot1": []]) == ["iot0": ["e0/0", "e0/1"], "iot1": []])
        #expect(await qmpError { try await daemon.blockExportDel(id: "e0", mode: .safe) } == QMPError(
            .genericError, "Export 'e0' is in use by a connected frontend; detach it first (device_del in QEMU) or use mode=hard"))

        try await daemon.moveQueue(exportID: "e0", queue: 1, iothread: "iot1")
        #expect(queuesByThread(daemon) == ["iot0": ["e0/0"], "iot1": ["e0/1"]])
        #expect(await qmpError { try daemon.objectDel(id: "iot1") } == QMPError(.genericError, "iothread 'iot1' still serves e0/1"))
        try await daemon.moveQueue(exportID: "e0", queue: 1, iothread: "iot0")
        #expect(queuesByThread(daemon) == ["iot0": ["e0/0", "e0/1"], "iot1": []])
        try await daemon.moveQueue(exportID: "e0", queue: 0, iothread: "iot1")
        #expect(queuesByThread(daemon) == ["iot0": ["e0/1"], "iot1": ["e0/0"]])

        // The frontend stops its queues (device_del): every thread is free again.
        try await frontend.stopQueues()
        #expect(queuesByThread(daemon) == ["iot0": [], "iot1": []])
        try daemon.objectDel(id: "iot1")
        try await daemon.blockExportDel(id: "e0", mode: .hard)
        await daemon.shutdown()
        _ = frontend
    }

    @Test @ControlActor func automaticPlacementServesQueuesFromPerCPUThreads() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.blockdevAdd(nullNode("n0"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory))
        let frontend = try await InProcessFrontend.connect(to: directory.file("e0.sock"), queues: 2)
        var placed: [String: [String]] = [:]
        for _ in 0..<200 where placed.values.joined().count < 2 {
            placed = queuesByThread(daemon).filter { !$0.value.isEmpty }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        #expect(placed.values.joined().sorted() == ["e0/0", "e0/1"])
        #expect(placed.keys.allSatisfy { $0.hasPrefix("auto-cpu") })
        let busy = try #require(placed.first)
        #expect(await qmpError { try daemon.objectDel(id: busy.key) }
            == QMPError(.genericError, "iothread '\(busy.key)' still serves \(busy.value.joined(separator: ", "))"))
        // Two queues on a host with two or more CPUs: the placer spreads them.
        if daemon.placer.map({ $0.cpus.count >= 2 }) == true { #expect(placed.count == 2) }

        try await frontend.stopQueues()
        #expect(queuesByThread(daemon).values.allSatisfy { $0.isEmpty })
        let counts = try #require(daemon.placer?.queueCounts)
        #expect(counts.values.allSatisfy { $0 == 0 }, "every CPU the placer counted was given back: \(counts)")
        await daemon.shutdown()
        _ = frontend
    }
}
