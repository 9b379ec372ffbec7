import Placement
import Testing

/// A placer over one of the simulated machines.
func placer(_ sysfs: FakeSysfs, allowedCPUs: Set<Int>? = nil) throws -> QueuePlacer {
    try QueuePlacer(topology: NUMATopology(sysfsRoot: sysfs.root), allowedCPUs: allowedCPUs)
}

@Suite struct OneNodePlacementTests {
    @Test func queuesAlternateOverTheTwoCPUs() throws {
        var placer = try placer(.oneNodeTwoCPUs())
        let decisions = (0..<4).map { _ in placer.assign(ringNode: 0) }
        #expect(decisions == [
            PlacementDecision(cpu: 0, node: 0, ringNode: 0, reason: "ring memory on node 0; CPU 0 serves the fewest queues on node 0 (0 queues)"),
            PlacementDecision(cpu: 1, node: 0, ringNode: 0, reason: "ring memory on node 0; CPU 1 serves the fewest queues on node 0 (0 queues)"),
            PlacementDecision(cpu: 0, node: 0, ringNode: 0, reason: "ring memory on node 0; CPU 0 serves the fewest queues on node 0 (1 queue)"),
            PlacementDecision(cpu: 1, node: 0, ringNode: 0, reason: "ring memory on node 0; CPU 1 serves the fewest queues on node 0 (1 queue)"),
        ])
        #expect(decisions.allSatisfy { $0.isLocal })
        #expect(placer.queueCounts == [0: 2, 1: 2])
    }

    @Test func unknownRingNodeSpreadsOverAllCPUs() throws {
        var placer = try placer(.oneNodeTwoCPUs())
        #expect(placer.assign(ringNode: nil) == PlacementDecision(
            cpu: 0, node: 0, ringNode: nil, reason: "ring memory node unknown; CPU 0 serves the fewest queues of all CPUs (0 queues)"))
        #expect(placer.assign(ringNode: nil).cpu == 1)
        #expect(placer.assign(ringNode: nil).cpu == 0)
    }

    @Test func decideDoesNotRecord() throws {
        let placer = try placer(.oneNodeTwoCPUs())
        #expect(placer.decide(ringNode: 0).cpu == 0)
        #expect(placer.decide(ringNode: 0).cpu == 0)
        #expect(placer.queueCounts == [0: 0, 1: 0])
    }
}

@Suite struct TwoNodePlacementTests {
    @Test func queuesGoToTheRingNodeAndSpreadEvenly() throws {
        var placer = try placer(.twoNodes())
        for round in 0..<3 {
            for cpu in 4...7 {
                let decision = placer.assign(ringNode: 1)
                #expect(decision == PlacementDecision(
                    cpu: cpu, node: 1, ringNode: 1,
                    reason: "ring memory on node 1; CPU \(cpu) serves the fewest queues on node 1 (\(round) queue\(round == 1 ? "" : "s"))"))
            }
        }
        #expect(placer.queueCounts == [0: 0, 1: 0, 2: 0, 3: 0, 4: 3, 5: 3, 6: 3, 7: 3])
    }

    @Test func interleavedNodesStayLocal() throws {
        var placer = try placer(.twoNodes())
        let rings = [0, 1, 1, 0, 1, 0, 0, 1, 0]
        let decisions = rings.map { placer.assign(ringNode: $0) }
        #expect(decisions.map(\.cpu) == [0, 4, 5, 1, 6, 2, 3, 7, 0])
        #expect(decisions.map(\.node) == rings)
        #expect(decisions.allSatisfy { $0.isLocal })
    }

    @Test func releaseFreesLoad() throws {
        var placer = try placer(.twoNodes())
        for _ in 0..<4 { _ = placer.assign(ringNode: 1) }
        #expect(placer.release(cpu: 6) == true)
        #expect(placer.queueCount(onCPU: 6) == 0)
        #expect(placer.assign(ringNode: 1).cpu == 6, "the freed CPU is the least loaded again")
        #expect(placer.assign(ringNode: 1).cpu == 4)
    }

    @Test func releaseOfAnIdleOrUnknownCPUChangesNothing() throws {
        var placer = try placer(.twoNodes())
        #expect(placer.release(cpu: 3) == false)
        #expect(placer.release(cpu: 99) == false)
        #expect(placer.queueCounts.values.allSatisfy { $0 == 0 })
    }

    @Test func unknownRingNodeUsesTheLeastLoadedCPUAnywhere() throws {
        var placer = try placer(.twoNodes())
        for _ in 0..<4 { _ = placer.assign(ringNode: 0) }
        let decision = placer.assign(ringNode: nil)
        #expect(decision == PlacementDecision(
            cpu: 4, node: 1, ringNode: nil, reason: "ring memory node unknown; CPU 4 serves the fewest queues of all CPUs (0 queues)"))
        #expect(!decision.isLocal)
    }

    @Test func ringNodeOutsideTheTopologyIsTreatedAsUnknown() throws {
        var placer = try placer(.twoNodes())
        #expect(placer.assign(ringNode: 5) == PlacementDecision(
            cpu: 0, node: 0, ringNode: 5,
            reason: "ring memory on node 5, which is not an online node; CPU 0 serves the fewest queues of all CPUs (0 queues)"))
    }

    @Test func recordedExplicitPlacementsCount() throws {
        var placer = try placer(.twoNodes())
        #expect(placer.record(cpu: 4) == true)
        #expect(placer.record(cpu: 5) == true)
        #expect(placer.record(cpu: 42) == false)
        #expect(placer.assign(ringNode: 1).cpu == 6)
    }

    @Test func userRestrictedCPUsAreTheOnlyChoices() throws {
        var placer = try placer(.twoNodes(), allowedCPUs: [1, 2, 6])
        #expect(placer.cpus == [1, 2, 6])
        #expect([0, 0, 0].map { _ in placer.assign(ringNode: 0).cpu } == [1, 2, 1])
        #expect([1, 1].map { _ in placer.assign(ringNode: 1).cpu } == [6, 6])
    }

    @Test func nodeWhoseCPUsAreAllExcludedFallsBack() throws {
        var placer = try placer(.twoNodes(), allowedCPUs: [0, 1])
        #expect(placer.assign(ringNode: 1) == PlacementDecision(
            cpu: 0, node: 0, ringNode: 1,
            reason: "ring memory on node 1, whose CPUs are all outside the allowed set; nearest node with CPUs is 0 (distance 21); CPU 0 serves the fewest queues on node 0 (0 queues)"))
    }

    @Test func restrictionWithoutUsableCPUsIsAnError() throws {
        let sysfs = FakeSysfs.twoNodes()
        let topology = try NUMATopology(sysfsRoot: sysfs.root)
        let error = thrownError(PlacementError.self) { _ = try QueuePlacer(topology: topology, allowedCPUs: [8, 9]) }
        #expect(error?.description == "no CPU to place queues on among the allowed CPUs \"8-9\": the topology's CPUs are \"0-7\"")
    }
}

@Suite struct FourNodePlacementTests {
    @Test func nodesWithCPUsServeTheirOwnRings() throws {
        var placer = try placer(.fourNodes())
        #expect([0, 0, 0].map { _ in placer.assign(ringNode: 0).cpu } == [0, 1, 0])
        #expect([1, 1].map { _ in placer.assign(ringNode: 1).cpu } == [2, 3])
        // Node 3 has CPUs but no memory: a ring cannot really live there, but if asked, stay local.
        #expect(placer.assign(ringNode: 3).cpu == 4)
    }

    @Test func memoryOnlyNodeFallsBackToTheNearestNodeByItsCPUsDistance() throws {
        var placer = try placer(.fourNodes())
        // Column 2 of the table: node 0 → 30, node 1 → 25, node 3 → 15. (Row 2 would say node 1.)
        let decisions = (0..<3).map { _ in placer.assign(ringNode: 2) }
        #expect(decisions == [
            PlacementDecision(
                cpu: 4, node: 3, ringNode: 2,
                reason: "ring memory on node 2, which has no CPUs; nearest node with CPUs is 3 (distance 15); CPU 4 serves the fewest queues on node 3 (0 queues)"),
            PlacementDecision(
                cpu: 5, node: 3, ringNode: 2,
                reason: "ring memory on node 2, which has no CPUs; nearest node with CPUs is 3 (distance 15); CPU 5 serves the fewest queues on node 3 (0 queues)"),
            PlacementDecision(
                cpu: 4, node: 3, ringNode: 2,
                reason: "ring memory on node 2, which has no CPUs; nearest node with CPUs is 3 (distance 15); CPU 4 serves the fewest queues on node 3 (1 queue)"),
        ])
        #expect(decisions.allSatisfy { !$0.isLocal })
    }

    @Test func fallbackSkipsNodesLeftWithoutAllowedCPUs() throws {
        // Without node 3's CPUs, the next nearest to node 2's memory is node 1 (25), not node 0 (30).
        var placer = try placer(.fourNodes(), allowedCPUs: [0, 1, 2, 3])
        #expect(placer.assign(ringNode: 2) == PlacementDecision(
            cpu: 2, node: 1, ringNode: 2,
            reason: "ring memory on node 2, which has no CPUs; nearest node with CPUs is 1 (distance 25); CPU 2 serves the fewest queues on node 1 (0 queues)"))
    }

    @Test func fallbackTieGoesToTheLowestNodeID() throws {
        let topology = NUMATopology(
            nodes: [NUMANode(id: 0, cpus: [0]), NUMANode(id: 1, cpus: [1]), NUMANode(id: 2, cpus: [])],
            distances: [0: [0: 10, 1: 20, 2: 20], 1: [0: 20, 1: 10, 2: 20], 2: [0: 20, 1: 20, 2: 10]])
        var placer = try QueuePlacer(topology: topology)
        #expect(placer.assign(ringNode: 2).node == 0)
        #expect(placer.assign(ringNode: 2).node == 0, "the tie between nodes is by id, not by load")
    }

    @Test func missingDistancesCountAsFarthest() throws {
        let topology = NUMATopology(
            nodes: [NUMANode(id: 0, cpus: [0]), NUMANode(id: 1, cpus: [1]), NUMANode(id: 2, cpus: [])],
            distances: [1: [2: 40]])
        var placer = try QueuePlacer(topology: topology)
        #expect(placer.assign(ringNode: 2).node == 1)
        let placer2 = try QueuePlacer(topology: NUMATopology(nodes: [NUMANode(id: 0, cpus: [0]), NUMANode(id: 2, cpus: [])], distances: [:]))
        #expect(placer2.decide(ringNode: 2).reason.contains("nearest node with CPUs is 0 (distance unknown)"))
    }

    @Test func unknownRingNodeSpreadsOverEveryNodesCPUs() throws {
        var placer = try placer(.fourNodes())
        let cpus = (0..<6).map { _ in placer.assign(ringNode: nil).cpu }
        #expect(cpus == [0, 1, 2, 3, 4, 5])
        #expect(placer.assign(ringNode: nil).cpu == 0)
    }
}
