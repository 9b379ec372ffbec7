import Placement
import Testing

@Suite struct TopologyLoadingTests {
    @Test func oneNodeTwoCPUs() throws {
        let sysfs = FakeSysfs.oneNodeTwoCPUs()
        let topology = try NUMATopology(sysfsRoot: sysfs.root)
        #expect(topology.nodes == [NUMANode(id: 0, cpus: [0, 1], hasMemory: true)])
        #expect(topology.onlineCPUs == [0, 1])
        #expect(topology.distance(from: 0, to: 0) == 10)
        #expect(topology.description == "1 node: node0 cpus 0-1")
    }

    @Test func twoNodes() throws {
        let sysfs = FakeSysfs.twoNodes()
        let topology = try NUMATopology(sysfsRoot: sysfs.root)
        #expect(topology.nodes.map(\.id) == [0, 1])
        #expect(topology.node(0)?.cpus == [0, 1, 2, 3])
        #expect(topology.node(1)?.cpus == [4, 5, 6, 7])
        #expect(topology.onlineCPUs == Array(0...7))
        #expect(topology.distance(from: 0, to: 1) == 21)
        #expect(topology.distance(from: 1, to: 1) == 10)
        #expect(topology.node(ofCPU: 6) == 1)
    }

    @Test func fourNodesWithMemoryOnlyNodeAndAsymmetricDistances() throws {
        let sysfs = FakeSysfs.fourNodes()
        let topology = try NUMATopology(sysfsRoot: sysfs.root)
        #expect(topology.nodes == [
            NUMANode(id: 0, cpus: [0, 1], hasMemory: true),
            NUMANode(id: 1, cpus: [2, 3], hasMemory: true),
            NUMANode(id: 2, cpus: [], hasMemory: true),
            NUMANode(id: 3, cpus: [4, 5], hasMemory: false),
        ])
        #expect(topology.distance(from: 3, to: 2) == 15)
        #expect(topology.distance(from: 2, to: 3) == 20)
        #expect(topology.distance(from: 2, to: 1) == 12)
        #expect(topology.description == "4 nodes: node0 cpus 0-1, node1 cpus 2-3, node2 no cpus, node3 cpus 4-5 no memory")
    }

    @Test func withoutHasMemoryEveryNodeIsAssumedToHaveMemory() throws {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.remove("devices/system/node/has_memory")
        let topology = try NUMATopology(sysfsRoot: sysfs.root)
        #expect(topology.nodes.allSatisfy { $0.hasMemory })
    }

    @Test func nonNUMAKernelDegeneratesToOneNode() throws {
        let sysfs = FakeSysfs()
        sysfs.write("devices/system/cpu/online", "0-2,5\n")
        let topology = try NUMATopology(sysfsRoot: sysfs.root)
        #expect(topology.nodes == [NUMANode(id: 0, cpus: [0, 1, 2, 5])])
        #expect(topology.onlineCPUs == [0, 1, 2, 5])
        #expect(topology.distance(from: 0, to: 0) == 10)
    }

    @Test func offlineCPUsAreLeftOut() throws {
        let sysfs = FakeSysfs.numa(cpuOnline: "0-2,4-7", nodes: [(0, "0-3", "10 21"), (1, "4-7", "21 10")])
        let topology = try NUMATopology(sysfsRoot: sysfs.root)
        #expect(topology.node(0)?.cpus == [0, 1, 2])
        #expect(topology.onlineCPUs == [0, 1, 2, 4, 5, 6, 7])
    }

    @Test func affinityMaskRestrictsCPUs() throws {
        let sysfs = FakeSysfs.twoNodes()
        let topology = try NUMATopology(sysfsRoot: sysfs.root, allowedCPUs: [1, 2, 5, 42])
        #expect(topology.node(0)?.cpus == [1, 2])
        #expect(topology.node(1)?.cpus == [5])
        #expect(topology.onlineCPUs == [1, 2, 5])
    }

    @Test func affinityMaskCanLeaveANodeWithoutCPUs() throws {
        let sysfs = FakeSysfs.twoNodes()
        let topology = try NUMATopology(sysfsRoot: sysfs.root, allowedCPUs: [0, 1])
        #expect(topology.node(1)?.cpus == [])
        #expect(topology.node(1)?.hasCPUs == false)
    }

    @Test func restrictedKeepsNodesAndDistances() throws {
        let sysfs = FakeSysfs.twoNodes()
        let topology = try NUMATopology(sysfsRoot: sysfs.root).restricted(to: [3, 4])
        #expect(topology.nodes == [NUMANode(id: 0, cpus: [3]), NUMANode(id: 1, cpus: [4])])
        #expect(topology.distance(from: 0, to: 1) == 21)
    }
}

@Suite struct TopologyErrorTests {
    /// Loads `sysfs` expecting an error that names `file` and mentions every fragment.
    func expectError(_ sysfs: FakeSysfs, allowedCPUs: Set<Int>? = nil, file: String, _ fragments: String...,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        let error = thrownError(TopologyError.self, sourceLocation: sourceLocation) {
            _ = try NUMATopology(sysfsRoot: sysfs.root, allowedCPUs: allowedCPUs)
        }
        guard let error else { return }
        #expect(error.file == sysfs.root + "/" + file, sourceLocation: sourceLocation)
        #expect(error.description.hasPrefix(sysfs.root + "/" + file + ": "), sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.description.contains(fragment), "'\(error)' should contain '\(fragment)'", sourceLocation: sourceLocation)
        }
    }

    @Test func missingCPUOnline() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.remove("devices/system/cpu/online")
        expectError(sysfs, file: "devices/system/cpu/online", "cannot open", "No such file")
    }

    @Test func missingRootFolder() {
        let error = thrownError(TopologyError.self) { _ = try NUMATopology(sysfsRoot: "/nonexistent/sys") }
        #expect(error?.description == "/nonexistent/sys/devices/system/cpu/online: cannot open: No such file or directory")
    }

    @Test func malformedCPUOnline() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/cpu/online", "0-7,x\n")
        expectError(sysfs, file: "devices/system/cpu/online", "malformed list \"0-7,x\"", "'x' is not a number")
    }

    @Test func malformedNodeCPUList() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/node/node1/cpulist", "7-4\n")
        expectError(sysfs, file: "devices/system/node/node1/cpulist", "'7-4' ends before it starts")
    }

    @Test func malformedNodeOnline() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/node/online", "0;1\n")
        expectError(sysfs, file: "devices/system/node/online", "malformed list")
    }

    @Test func noOnlineNode() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/node/online", "\n")
        expectError(sysfs, file: "devices/system/node/online", "no node is online")
    }

    @Test func onlineNodeWithoutFolder() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.remove("devices/system/node/node1")
        expectError(sysfs, file: "devices/system/node/node1/cpulist", "cannot open")
    }

    @Test func distanceRowOfWrongLength() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/node/node1/distance", "10\n")
        expectError(sysfs, file: "devices/system/node/node1/distance", "has 1 distances but 2 nodes are online (0-1)")
    }

    @Test func distanceThatIsNotANumber() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/node/node0/distance", "10 2x\n")
        expectError(sysfs, file: "devices/system/node/node0/distance", "'2x' is not a number in \"10 2x\"")
    }

    @Test func missingDistance() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.remove("devices/system/node/node0/distance")
        expectError(sysfs, file: "devices/system/node/node0/distance", "cannot open")
    }

    @Test func malformedHasMemory() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/node/has_memory", "zero\n")
        expectError(sysfs, file: "devices/system/node/has_memory", "malformed list")
    }

    @Test func cpuListedByTwoNodes() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/node/node1/cpulist", "3-7\n")
        expectError(sysfs, file: "devices/system/node/node1/cpulist", "CPU 3 is also listed by node0")
    }

    @Test func noOnlineCPU() {
        let sysfs = FakeSysfs.twoNodes()
        sysfs.write("devices/system/cpu/online", "\n")
        expectError(sysfs, file: "devices/system/cpu/online", "no CPU is online")
    }

    @Test func affinityMaskOutsideTheOnlineCPUs() {
        expectError(FakeSysfs.twoNodes(), allowedCPUs: [8, 9], file: "devices/system/cpu/online",
                    "none of the online CPUs 0-7 is in the allowed set \"8-9\"")
    }

    @Test func noNodeListsTheOnlineCPUs() {
        let sysfs = FakeSysfs.numa(cpuOnline: "0-1", nodes: [(0, "", "10")])
        expectError(sysfs, file: "devices/system/node", "no online node lists any of the usable CPUs 0-1")
    }
}
