import BlockCommon
import ControlThread
import Monitor
import SpindleOptions
import SpindleTestSupport
import Testing
@testable import SpindleDaemon

/// The daemon's QMP command target, called directly on the control thread: the results and
/// the error texts the operator sees (the same ones Tests/guest/test_qmp.py checks over QMP).
@Suite(.serialized) struct MonitorTargetTests {
    @Test @ControlActor func blockdevAddOpensANodeAndBlockdevDelClosesIt() async throws {
        let daemon = try await startedDaemon()
        try daemon.blockdevAdd(nullNode("n0"))
        #expect(daemon.queryNamedBlockNodes() == [
            BlockNodeInfo(nodeName: "n0", driver: "null-co", file: "n0", readOnly: false, virtualSize: 64 << 20),
        ])
        #expect(await qmpError { try daemon.blockdevAdd(nullNode("n0")) }
            == QMPError(.genericError, "node name 'n0' is already in use; choose another node-name"))
        #expect(await qmpError { try daemon.blockdevDel(nodeName: "nope") }
            == QMPError(.genericError, "Failed to find node with node-name='nope'"))
        try daemon.blockdevDel(nodeName: "n0")
        #expect(daemon.queryNamedBlockNodes() == [])
        await daemon.shutdown()
    }

    @Test @ControlActor func blockExportAddServesASocketAndBlockExportDelRemovesIt() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.blockdevAdd(nullNode("n0"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory))
        #expect(directory.exists("e0.sock"))
        #expect(daemon.queryBlockExports() == [BlockExportInfo(id: "e0", nodeName: "n0")])
        // A node in use cannot be deleted; the error says why.
        #expect(await qmpError { try daemon.blockdevDel(nodeName: "n0") }
            == QMPError(.genericError, "node 'n0' is in use by 1 export(s); delete or revoke them first"))
        try await daemon.blockExportDel(id: "e0", mode: .safe)
        #expect(!directory.exists("e0.sock"))
        #expect(daemon.queryBlockExports() == [])
        #expect(await qmpError { try await daemon.blockExportDel(id: "e0", mode: .safe) }
            == QMPError(.genericError, "Export 'e0' is not found"))
        try daemon.blockdevDel(nodeName: "n0")
        await daemon.shutdown()
    }

    @Test @ControlActor func blockExportAddRefusalsNameWhatToFix() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.blockdevAdd(nullNode("n0"))
        try daemon.blockdevAdd(nullNode("n1"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory))
        #expect(await qmpError { try await daemon.blockExportAdd(exportOptions("e0", node: "n1", in: directory)) }
            == QMPError(.genericError, "export id 'e0' is already in use"))
        var sameSocket = exportOptions("e1", node: "n1", in: directory)
        sameSocket.socketPath = directory.file("e0.sock")
        #expect(await qmpError { try await daemon.blockExportAdd(sameSocket) }
            == QMPError(.genericError, "socket path '\(directory.file("e0.sock"))' is already used by another export"))
        #expect(await qmpError { try await daemon.blockExportAdd(exportOptions("e1", node: "n1", in: directory, iothread: "iot9")) }
            == QMPError(.genericError, "--export id=e1: iothread 'iot9' does not exist; add --object iothread,id=iot9 before it"))
        #expect(await qmpError { try await daemon.blockExportAdd(exportOptions("e1", node: "ghost", in: directory)) }
            == QMPError(.genericError, "--export id=e1: node 'ghost' does not exist; add it with --blockdev (or blockdev-add) first"))
        // Nothing of the refused exports stays behind.
        #expect(daemon.queryBlockExports() == [BlockExportInfo(id: "e0", nodeName: "n0")])
        #expect(!directory.exists("e1.sock"))
        await daemon.shutdown()
        #expect(!directory.exists("e0.sock"))
    }

    @Test @ControlActor func blockResizeByNodeNameAndByDevice() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.blockdevAdd(nullNode("n0"))
        let byNode = try await daemon.blockResize(.nodeName("n0"), size: 128 << 20)
        #expect(byNode == ResizeOutcome(guestNotified: false))
        #expect(daemon.queryNamedBlockNodes().first?.virtualSize == 128 << 20)
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory))
        // No frontend is connected, so no guest is told.
        #expect(try await daemon.blockResize(.device("e0"), size: 256 << 20) == ResizeOutcome(guestNotified: false))
        #expect(daemon.queryNamedBlockNodes().first?.virtualSize == 256 << 20)
        #expect(await qmpError { _ = try await daemon.blockResize(.nodeName("x"), size: 1 << 20) }
            == QMPError(.genericError, "Cannot find device='' nor node-name='x'"))
        #expect(await qmpError { _ = try await daemon.blockResize(.device("x"), size: 1 << 20) }
            == QMPError(.deviceNotFound, "Device 'x' not found"))
        #expect(await qmpError { _ = try await daemon.blockResize(.nodeName("n0"), size: 1000) }
            == QMPError(.genericError, "node 'n0': size 1000 is not a multiple of 512 bytes"))
        await daemon.shutdown()
    }

    @Test @ControlActor func revokeWithdrawsTheImageOnce() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.blockdevAdd(nullNode("n0"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory))
        try await daemon.revokeExport(id: "e0")
        // The node nothing else used is closed; the export stays and shows the node it was given.
        #expect(daemon.queryNamedBlockNodes() == [])
        #expect(daemon.queryBlockExports() == [BlockExportInfo(id: "e0", nodeName: "n0")])
        #expect(await qmpError { try await daemon.revokeExport(id: "e0") }
            == QMPError(.genericError, "Export 'e0' was already revoked"))
        #expect(await qmpError { try await daemon.revokeExport(id: "zz") } == QMPError(.deviceNotFound, "Device 'zz' not found"))
        #expect(await qmpError { _ = try await daemon.blockResize(.device("e0"), size: 1 << 20) }
            == QMPError(.genericError, "Device 'e0' has no medium (it was revoked)"))
        try await daemon.blockExportDel(id: "e0", mode: .safe)
        await daemon.shutdown()
    }

    @Test @ControlActor func objectAddStartsAnIOThreadAndObjectDelStopsIt() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.objectAdd(iothreadObject("iot9"))
        let info = try #require(daemon.queryIOThreads().first { $0.id == "iot9" })
        #expect(info.threadID > 0 && info.pollMaxNs == 0 && info.queues == [] && info.cpu == nil)
        #expect(await qmpError { try daemon.objectAdd(iothreadObject("iot9")) }
            == QMPError(.genericError, "attempt to add duplicate property 'iot9' to object (type 'container')"))
        #expect(await qmpError { try daemon.objectDel(id: "nope") } == QMPError(.genericError, "object 'nope' not found"))
        // In use by an export: refused, with the reason.
        try daemon.blockdevAdd(nullNode("n0"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory, iothread: "iot9"))
        #expect(await qmpError { try daemon.objectDel(id: "iot9") }
            == QMPError(.genericError, "iothread 'iot9' is used by export 'e0'; delete the export first"))
        try await daemon.blockExportDel(id: "e0", mode: .safe)
        try daemon.objectDel(id: "iot9")
        #expect(!daemon.queryIOThreads().contains { $0.id == "iot9" })
        await daemon.shutdown()
    }

    @Test @ControlActor func moveQueueRefusalsNameWhatIsMissing() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try await startedDaemon()
        try daemon.objectAdd(iothreadObject("iot0"))
        try daemon.blockdevAdd(nullNode("n0"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory))
        #expect(await qmpError { try await daemon.moveQueue(exportID: "zz", queue: 0, iothread: "iot0") }
            == QMPError(.genericError, "Export 'zz' is not found"))
        #expect(await qmpError { try await daemon.moveQueue(exportID: "e0", queue: 0, iothread: "nope") }
            == QMPError(.genericError, "iothread 'nope' not found"))
        #expect(await qmpError { try await daemon.moveQueue(exportID: "e0", queue: 0, iothread: "iot0") }
            == QMPError(.genericError, "export 'e0' has no frontend, so queue 0 is not running"))
        await daemon.shutdown()
    }

    @Test @ControlActor func quitAsksTheOwnerToShutDown() async throws {
        let quit = QuitRecorder()
        let daemon = try await startedDaemon(quit: quit)
        daemon.quit()
        #expect(quit.requests == 1)
        await daemon.shutdown()
    }
}

/// What the command target tells the monitors: events from export deletion and revocation.
@Suite(.serialized) struct DaemonEventTests {
    @Test @ControlActor func revokeAndDeleteReachEveryMonitorClientAsEvents() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var chardev = SocketChardevOptions(id: "qmp0", path: directory.file("qmp.sock"))
        chardev.wait = false
        var configuration = DaemonConfiguration()
        configuration.monitors = [MonitorOptions(chardev: chardev)]
        let daemon = Daemon(requestQuit: {})
        try await daemon.start(configuration)
        let client = try await QMPLineClient.negotiated(path: directory.file("qmp.sock"))
        try daemon.blockdevAdd(nullNode("n0"))
        try await daemon.blockExportAdd(exportOptions("e0", node: "n0", in: directory))
        try await daemon.revokeExport(id: "e0")
        try await daemon.blockExportDel(id: "e0", mode: .safe)
        let events = try await client.lines(2)
        #expect(events.count == 2)
        #expect(events.first?.contains(#""event": "BLOCK_EXPORT_REVOKED""#) == true && events.first?.contains(#""data": {"id": "e0"}"#) == true,
                "\(events)")
        #expect(events.last?.contains(#""event": "BLOCK_EXPORT_DELETED""#) == true && events.last?.contains(#""data": {"id": "e0"}"#) == true,
                "\(events)")
        await daemon.shutdown()
        #expect(!directory.exists("qmp.sock"))
    }
}
