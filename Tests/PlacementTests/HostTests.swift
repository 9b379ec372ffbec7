import Glibc
import Placement
import Testing

/// The real machine: whatever it is, loading must work. (The test machine has one node and
/// two CPUs, but nothing here depends on that.)
@Suite struct HostTests {
    @Test func realSysfsLoads() throws {
        let topology = try NUMATopology()
        #expect(topology.nodes.count >= 1)
        #expect(topology.onlineCPUs.count >= 1)
        #expect(topology.nodes.contains { $0.hasCPUs })
    }

    @Test func currentTopologyIsWithinTheAffinityMask() throws {
        let allowed = try #require(processAllowedCPUs())
        #expect(!allowed.isEmpty)
        let topology = try NUMATopology.current()
        #expect(Set(topology.onlineCPUs).isSubset(of: allowed))
        #expect(!topology.onlineCPUs.isEmpty)
        _ = try QueuePlacer(topology: topology)
    }

    @Test func nodeOfATouchedPageIsAnOnlineNode() throws {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        var memory: UnsafeMutableRawPointer?
        #expect(posix_memalign(&memory, pageSize, pageSize) == 0)
        let page = try #require(memory)
        defer { free(page) }
        page.storeBytes(of: 0xA5, as: UInt8.self) // make the page resident
        let node = nodeOfAddress(page)
        // nil when NUMA is unavailable (no libnuma support, or the syscalls are refused);
        // otherwise a node of this machine: node 0 on a one-node machine.
        if let node {
            let topology = try NUMATopology()
            #expect(topology.node(node) != nil, "node \(node) is not online")
            if topology.nodes.count == 1 { #expect(node == 0) }
        }
    }

    @Test func nodeOfAnUntouchedPageIsNotInvented() throws {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let mapping = mmap(nil, pageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        let page = try #require(mapping == MAP_FAILED ? nil : mapping)
        defer { munmap(page, pageSize) }
        // move_pages reports a missing page as -ENOENT, so the answer is nil. (Only the
        // get_mempolicy fallback, used when move_pages itself is refused, faults it in.)
        if let node = nodeOfAddress(page) {
            let topology = try NUMATopology()
            #expect(topology.node(node) != nil, "node \(node) is not online")
        }
    }
}
