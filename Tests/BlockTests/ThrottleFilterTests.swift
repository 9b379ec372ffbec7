import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import Testing

/// The throttle filter over null-co through BlockBackends on real IOThreads.
@Suite(.serialized) struct ThrottleFilterTests {
    static func iops(_ value: UInt64) -> ThrottleLimits {
        var limits = ThrottleLimits()
        limits[.iopsTotal].average = value
        return limits
    }

    /// Nodes n<i> (null-co) and t<i> (throttle over n<i>, group tg), a BlockBackend on each t<i>.
    @ControlActor
    static func graph(limits: ThrottleLimits, nodes count: Int = 1) throws -> (BlockGraph, [BlockBackend]) {
        let graph = BlockGraph()
        try graph.addThrottleGroup(ThrottleGroupOptions(id: "tg", limits: limits))
        var backends: [BlockBackend] = []
        for i in 0..<count {
            try graph.openNode(BlockdevOptions(nodeName: NodeName("n\(i)"), driver: .null(NullOptions())))
            try graph.openNode(BlockdevOptions(nodeName: NodeName("t\(i)"), driver: .throttle(ThrottleFilterOptions(child: NodeName("n\(i)"), group: "tg"))))
            backends.append(try graph.createBackend(name: "dev\(i)", node: NodeName("t\(i)"), permissions: [.consistentRead, .write]))
        }
        return (graph, backends)
    }

    @ControlActor
    static func tearDown(_ graph: BlockGraph, _ backends: [BlockBackend]) async throws {
        for backend in backends { await graph.deleteBackend(backend) }
        graph.closeAllNodes()
        try graph.deleteThrottleGroup("tg")
        #expect(graph.nodes.isEmpty)
    }

    @Test @ControlActor func requestsOverTheLimitWaitAndCompleteInOrder() async throws {
        // 20 per second: the bucket lets 2 through at once, the other 6 wait ~0.05 s each.
        let (graph, backends) = try Self.graph(limits: Self.iops(20))
        let thread = try IOThread(id: "t-throttle", cpu: nil)
        thread.start()
        let handler = BatchHandler(backend: backends[0], context: thread.context, count: 8)
        let completions = handler.run(on: thread, .read)
        #expect(completions.map(\.slot) == Array(0..<8))
        #expect(completions.allSatisfy { $0.result == 4096 })
        let group = try #require(graph.throttleGroups["tg"])
        #expect(group.waitedRequests >= 5 && group.waitedRequests + group.passedRequests == 8)
        #expect(group.waitingRequests == 0)
        try await Self.tearDown(graph, backends)
        thread.stop()
    }

    @Test @ControlActor func flushesAreNotLimited() async throws {
        let (graph, backends) = try Self.graph(limits: Self.iops(1))
        let thread = try IOThread(id: "t-throttle-flush", cpu: nil)
        thread.start()
        let completions = BatchHandler(backend: backends[0], context: thread.context, count: 6).run(on: thread, .flush)
        #expect(completions.count == 6 && completions.allSatisfy { $0.result == 0 })
        #expect(graph.throttleGroups["tg"]?.waitedRequests == 0)
        try await Self.tearDown(graph, backends)
        thread.stop()
    }

    /// A drain waits for the requests that wait in the group's queue (they are in flight).
    @Test @ControlActor func drainWaitsForThrottledRequests() async throws {
        let (graph, backends) = try Self.graph(limits: Self.iops(20))
        let thread = try IOThread(id: "t-throttle-drain", cpu: nil)
        thread.start()
        let handler = BatchHandler(backend: backends[0], context: thread.context, count: 8)
        thread.post { thread in handler.start(id: thread.register(handler), operation: .write) }
        let group = try #require(graph.throttleGroups["tg"])
        while group.waitingRequests == 0 { usleep(1000) }
        await graph.drain(backends[0])
        #expect(handler.completions.withLock { $0.count } == 8, "every throttled request completed before the drain returned")
        #expect(group.waitingRequests == 0)
        graph.resume(backends[0])
        try await Self.tearDown(graph, backends)
        thread.stop()
    }

    /// Two BlockBackends on two IOThreads share one group: both finish, each in its order.
    @Test @ControlActor func twoIOThreadsShareOneGroup() async throws {
        let (graph, backends) = try Self.graph(limits: Self.iops(40), nodes: 2)
        let threads = try [IOThread(id: "t-tg-a", cpu: nil), IOThread(id: "t-tg-b", cpu: nil)]
        for thread in threads { thread.start() }
        let handlers = (0..<2).map { BatchHandler(backend: backends[$0], context: threads[$0].context, count: 10) }
        for (thread, handler) in zip(threads, handlers) {
            thread.post { thread in handler.start(id: thread.register(handler), operation: .read) }
        }
        for handler in handlers { for _ in 0..<10 { handler.done.wait() } }
        for handler in handlers {
            let completions = handler.completions.withLock { $0 }
            #expect(completions.map(\.slot) == Array(0..<10))
            #expect(completions.allSatisfy { $0.result == 4096 })
        }
        let group = try #require(graph.throttleGroups["tg"])
        #expect(group.waitedRequests + group.passedRequests == 20 && group.waitedRequests >= 14)
        #expect(throws: BlockError.self) { try graph.deleteThrottleGroup("tg") }
        try await Self.tearDown(graph, backends)
        for thread in threads { thread.stop() }
    }

    /// New limits reach requests that already wait: at 1 per second, 6 requests would take
    /// 5 s; lifted, they go within the group's longest timer (0.1 s).
    @Test @ControlActor func liftedLimitsReleaseWaitingRequests() async throws {
        let (graph, backends) = try Self.graph(limits: Self.iops(1))
        let thread = try IOThread(id: "t-throttle-lift", cpu: nil)
        thread.start()
        let handler = BatchHandler(backend: backends[0], context: thread.context, count: 6)
        thread.post { thread in handler.start(id: thread.register(handler), operation: .read) }
        let group = try #require(graph.throttleGroups["tg"])
        while group.waitingRequests < 5 { usleep(1000) }
        try graph.setThrottleLimits(ThrottleLimits(), group: "tg")
        for _ in 0..<6 { handler.done.wait() }
        #expect(handler.completions.withLock { $0.map(\.slot) } == Array(0..<6))
        #expect(throws: BlockError.self) { try graph.setThrottleLimits(Self.iops(0).withTotalAndRead, group: "tg") }
        try await Self.tearDown(graph, backends)
        thread.stop()
    }

    /// block_set_io_throttle's graph change: an implicit throttle node above the served node,
    /// removed by zero limits; resize and revoke go through it.
    @Test @ControlActor func implicitThrottleNodeComesAndGoes() async throws {
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("n"), driver: .null(NullOptions())))
        let backend = try graph.createBackend(name: "exp0", node: NodeName("n"), permissions: [.consistentRead, .write, .resize])
        try await graph.setIOThrottle(Self.iops(100), for: backend, group: nil)
        #expect(graph.rootNode(of: backend)?.name == NodeName("#throttle-exp0"))
        #expect(graph.rootNode(of: backend)?.driverName == "throttle")
        #expect(graph.servedNode(of: backend)?.name == NodeName("n"))
        #expect(graph.throttleGroups["exp0"]?.limits == Self.iops(100))
        // Again with other limits: the same node, the group's limits change.
        try await graph.setIOThrottle(Self.iops(200), for: backend, group: nil)
        #expect(graph.throttleGroups["exp0"]?.limits == Self.iops(200) && graph.nodes.count == 2)
        // The node under it can still be resized; the BlockBackend sees the new size.
        _ = try await graph.resize(node: NodeName("n"), to: 2 << 30)
        #expect(backend.length == 2 << 30)
        try await graph.setIOThrottle(ThrottleLimits(), for: backend, group: nil)
        #expect(graph.rootNode(of: backend)?.name == NodeName("n"))
        #expect(graph.nodes.count == 1 && graph.throttleGroups.isEmpty, "the implicit node and group went")
        // Revocation closes the implicit node and the node it served.
        try await graph.setIOThrottle(Self.iops(100), for: backend, group: nil)
        #expect(await graph.revoke(backend) == NodeName("n"))
        #expect(graph.nodes.isEmpty && graph.throttleGroups.isEmpty)
        await graph.deleteBackend(backend)
    }
}

/// block_set_io_throttle with zero limits while requests wait at a very low limit: the
/// implicit group lets them go before the drain, so the change does not wait for the limit.
@Suite(.serialized) struct ThrottleRemovalTests {
    @Test @ControlActor func zeroLimitsReleaseWaitingRequestsBeforeTheDrain() async throws {
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("n"), driver: .null(NullOptions())))
        let backend = try graph.createBackend(name: "exp0", node: NodeName("n"), permissions: [.consistentRead, .write])
        try await graph.setIOThrottle(ThrottleFilterTests.iops(1), for: backend, group: nil)
        let group = try #require(graph.throttleGroups["exp0"])
        let thread = try IOThread(id: "t-throttle-remove", cpu: nil)
        thread.start()
        // At 1 per second these 8 would take about 8 s.
        let handler = BatchHandler(backend: backend, context: thread.context, count: 8)
        thread.post { thread in handler.start(id: thread.register(handler), operation: .read) }
        while group.waitingRequests < 6 { usleep(1000) }
        try await graph.setIOThrottle(ThrottleLimits(), for: backend, group: nil)
        #expect(handler.completions.withLock { $0.map(\.slot) } == Array(0..<8))
        #expect(graph.rootNode(of: backend)?.name == NodeName("n") && graph.throttleGroups.isEmpty)
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("n"))
        thread.stop()
    }
}

extension ThrottleLimits {
    /// Invalid on purpose: a total and a read limit at once.
    var withTotalAndRead: ThrottleLimits {
        var limits = self
        limits[.iopsTotal].average = 1
        limits[.iopsRead].average = 1
        return limits
    }
}
