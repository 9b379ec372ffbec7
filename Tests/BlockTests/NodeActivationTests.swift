import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import CSpindle
import Glibc
import Testing

/// Inactive nodes (QEMU 10's blockdev-set-active): the state machine, the parent and export
/// rules, and the image locks as another process sees them.
@Suite(.serialized) struct NodeActivationTests {
    /// QEMU's lock bytes as a third open file description sees them: 100+bit "holds the
    /// permission", 200+bit "does not share it" (bit 0 consistent read, 1 write).
    struct LockProbe {
        let fd: Int32
        init(_ path: String) { fd = open(path, O_RDWR | O_CLOEXEC) }
        func locked(_ byte: Int64) -> Bool { spindle_ofd_test(fd, byte, F_WRLCK) == 1 }
        var writerLocks: [Bool] { [locked(100), locked(101), locked(201)] }
        func close() { _ = Glibc.close(fd) }
    }

    static func file(_ name: String, _ path: String, active: Bool = true) -> BlockdevOptions {
        var options = BlockdevOptions(nodeName: NodeName(name), driver: .file(FileOptions(filename: path)))
        options.active = active
        return options
    }

    static func message(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let error as BlockError { return error.message } catch { return "\(error)" }
    }

    @ControlActor static func asyncMessage(_ body: () async throws -> Void) async -> String? {
        do { try await body(); return nil } catch let error as BlockError { return error.message } catch { return "\(error)" }
    }

    static let writer: BlockPermissions = [.consistentRead, .write]

    @Test @ControlActor func handoverMovesTheImageLocksFromOneOwnerToTheOther() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let probe = LockProbe(path)
        defer { probe.close() }
        // A: the migration's source, active, writing.
        let graphA = BlockGraph()
        try graphA.openNode(Self.file("a", path))
        let exportA = try graphA.createBackend(name: "ea", node: NodeName("a"), permissions: Self.writer, allowInactive: true)
        #expect(probe.writerLocks == [true, true, true])
        // B: the destination. Active, it cannot even open the image; inactive it can.
        let graphB = BlockGraph()
        #expect(Self.message { try graphB.openNode(Self.file("b", path)) }?.contains("locked by another process") == true)
        let nodeB = try graphB.openNode(Self.file("b", path, active: false))
        #expect(!nodeB.isActive)
        let exportB = try graphB.createBackend(name: "eb", node: NodeName("b"), permissions: Self.writer, allowInactive: true)
        #expect(!exportB.beginRequest(), "requests wait while the node is inactive")
        // B cannot take the image while A holds it, and stays inactive.
        let refused = Self.message { try graphB.activate(node: NodeName("b")) }
        #expect(refused?.hasPrefix("Failed to activate node 'b': image '\(path)' is locked by another process") == true, "\(refused ?? "")")
        #expect(!nodeB.isActive && !exportB.beginRequest())
        // A lets go: flushed, no locks, its requests wait.
        try await graphA.setActive(false, node: NodeName("a"))
        #expect(graphA.nodes[NodeName("a")]?.isActive == false)
        #expect(probe.writerLocks == [false, false, false])
        #expect(!exportA.beginRequest())
        try await graphA.setActive(false, node: NodeName("a"))  // already inactive: nothing to do
        // B takes it: its locks, its requests flow.
        try graphB.activate(node: NodeName("b"))
        try graphB.activate(node: NodeName("b"))  // already active: nothing to do
        #expect(nodeB.isActive)
        #expect(probe.writerLocks == [true, true, true])
        #expect(exportB.beginRequest())
        exportB.endRequest()
        // Now A cannot take it back.
        #expect(Self.message { try graphA.activate(node: NodeName("a")) }?.contains("locked by another process") == true)
        #expect(graphA.nodes[NodeName("a")]?.isActive == false)
        await graphA.deleteBackend(exportA)
        await graphB.deleteBackend(exportB)
        try graphA.closeNode(NodeName("a"))
        try graphB.closeNode(NodeName("b"))
        #expect(probe.writerLocks == [false, false, false])
    }

    @Test @ControlActor func parentsGoFirstOnInactivationAndChildrenFirstOnActivation() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        try graph.openNode(Self.file("f", path))
        try graph.openNode(BlockdevOptions(nodeName: NodeName("d"), driver: .delay(DelayFilterOptions(child: NodeName("f")))))
        let active = { (name: String) in graph.nodes[NodeName(name)]?.isActive }
        #expect(await Self.asyncMessage { try await graph.setActive(false, node: NodeName("f")) }?.hasPrefix("Node has active parent node: 'd' is active and built on 'f'") == true, "a node under an active filter was inactivated")
        #expect(active("f") == true)
        // Inactivating the filter takes its child with it.
        try await graph.setActive(false, node: NodeName("d"))
        #expect(active("d") == false && active("f") == false)
        // No active node on an inactive one; an inactive one is fine.
        var filter = BlockdevOptions(nodeName: NodeName("d2"), driver: .delay(DelayFilterOptions(child: NodeName("f"))))
        #expect(Self.message { try graph.openNode(filter) }
            == "Inactive 'f' can't be a file child of active 'd2' (add it with active=off, or activate 'f' first)")
        #expect(graph.nodes[NodeName("f")]?.parents == [NodeName("d")], "the refused node left nothing behind")
        filter.active = false
        try graph.openNode(filter)
        // Activating a filter activates its child first; the other filter stays inactive.
        try graph.activate(node: NodeName("d"))
        #expect(active("d") == true && active("f") == true && active("d2") == false)
        // The child is in use by active 'd': inactivating all nodes goes top-down.
        try await graph.setActive(false, node: nil)
        #expect(active("d") == false && active("f") == false && active("d2") == false)
        try await graph.setActive(true, node: nil)
        #expect(active("d") == true && active("f") == true && active("d2") == true)
        // A child still used by an active filter stays active when another filter goes.
        try await graph.setActive(false, node: NodeName("d2"))
        #expect(active("d2") == false && active("f") == true)
        #expect(await Self.asyncMessage { try await graph.setActive(true, node: NodeName("nope")) } == "Failed to find node with node-name='nope'", "an unknown node was activated")
        try graph.closeNode(NodeName("d"))
        try graph.closeNode(NodeName("d2"))
        try graph.closeNode(NodeName("f"))
    }

    @Test @ControlActor func exportsWithoutAllowInactiveAndWritersKeepANodeActive() async throws {
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("n"), driver: .null(NullOptions())))
        let pinned = try graph.createBackend(name: "e0", node: NodeName("n"), permissions: Self.writer)
        #expect(await Self.asyncMessage { try await graph.setActive(false, node: NodeName("n")) }?.hasPrefix("Failed to inactivate node: Operation not permitted (export 'e0' uses node 'n'") == true, "inactivated under an export without allow-inactive")
        #expect(await Self.asyncMessage { try await graph.setActive(false, node: nil) }?.hasPrefix("Failed to inactivate all nodes: Operation not permitted") == true, "inactivated all under an export without allow-inactive")
        #expect(graph.nodes[NodeName("n")]?.isActive == true)
        #expect(pinned.beginRequest())
        pinned.endRequest()
        await graph.deleteBackend(pinned)
        try await graph.setActive(false, node: NodeName("n"))
        // An inactive node takes no new writer (but a reader, as QEMU) and cannot be resized.
        #expect(Self.message { _ = try graph.createBackend(name: "w", node: NodeName("n"), permissions: Self.writer) }
            == "Permission 'write' unavailable on inactive node 'n' (activate it first with blockdev-set-active)")
        let reader = try graph.createBackend(name: "r", node: NodeName("n"), permissions: [.consistentRead])
        #expect(await Self.asyncMessage { _ = try await graph.resize(node: NodeName("n"), to: 1 << 20) }?
            .hasPrefix("Permission 'resize' unavailable on inactive node 'n'") == true, "an inactive node was resized")
        // Deleting a BlockBackend held by an inactive node releases it.
        await graph.deleteBackend(reader)
        #expect(reader.beginRequest())
        reader.endRequest()
        try graph.closeNode(NodeName("n"))
    }

    @Test @ControlActor func inactivationWaitsForInFlightRequestsAndActivationRereadsTheSize() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        try graph.openNode(Self.file("f", path))
        let backend = try graph.createBackend(name: "e", node: NodeName("f"), permissions: Self.writer, allowInactive: true)
        let device = RecordingDevice()
        graph.setDeviceOps(device, for: backend)
        #expect(backend.beginRequest())  // a request in flight
        let inactivation = Task { @ControlActor in try await graph.setActive(false, node: NodeName("f")) }
        try await Task.sleep(nanoseconds: 50_000_000)
        #expect(graph.nodes[NodeName("f")]?.isActive == true, "inactivation waits for the request")
        #expect(!backend.beginRequest(), "new requests already wait")
        backend.endRequest()
        try await inactivation.value
        #expect(graph.nodes[NodeName("f")]?.isActive == false)
        // The other owner grew the image meanwhile: activation sees it and tells the device.
        #expect(truncate(path, 2 << 20) == 0)
        try graph.activate(node: NodeName("f"))
        #expect(backend.length == 2 << 20)
        #expect(device.events == ["drainedEnd", "resized"])
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("f"))
    }

    @Test @ControlActor func aFiltersBlockBackendLearnsItsChildsNewSize() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        try graph.openNode(Self.file("f", path))
        try graph.openNode(BlockdevOptions(nodeName: NodeName("d"), driver: .delay(DelayFilterOptions(child: NodeName("f")))))
        let backend = try graph.createBackend(name: "e", node: NodeName("d"), permissions: Self.writer, allowInactive: true)
        let device = RecordingDevice()
        graph.setDeviceOps(device, for: backend)
        try await graph.setActive(false, node: nil)
        #expect(truncate(path, 3 << 20) == 0)
        try await graph.setActive(true, node: NodeName("d"))
        #expect(backend.length == 3 << 20)
        #expect(device.events == ["drainedEnd", "resized"])
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("d"))
        try graph.closeNode(NodeName("f"))
    }
}

@ControlActor
final class RecordingDevice: BlockDeviceOps {
    var events: [String] = []
    func drainedEnd() { events.append("drainedEnd") }
    func resized() -> Bool {
        events.append("resized")
        return true
    }
}
