/// Loading the topology from a sysfs-shaped folder.
///
/// Files read, relative to the root:
/// - devices/system/cpu/online            the online CPUs ("0-3,8")
/// - devices/system/node/online           the online nodes
/// - devices/system/node/has_memory       the nodes with memory (optional)
/// - devices/system/node/nodeN/cpulist    each online node's CPUs
/// - devices/system/node/nodeN/distance   each online node's row of the distance table, one
///                                        number per online node, in ascending node order
extension NUMATopology {
    /// Reads the topology under `sysfsRoot`. Without devices/system/node (a kernel built
    /// without NUMA) the result is one node 0 holding every online CPU.
    ///
    /// - Parameter allowedCPUs: if given (e.g. `processAllowedCPUs()`), CPUs outside it are left
    ///   out, as if offline.
    public init(sysfsRoot: String = "/sys", allowedCPUs: Set<Int>? = nil) throws(TopologyError) {
        let files = SysfsFiles(root: sysfsRoot)
        let cpuOnlineFile = "devices/system/cpu/online"
        let online = try files.readList(cpuOnlineFile)
        let usable = allowedCPUs.map { allowed in online.filter(allowed.contains) } ?? online
        guard !usable.isEmpty else {
            let allowed = allowedCPUs.map { CPUList.format($0) } ?? ""
            throw TopologyError(
                file: files.path(cpuOnlineFile),
                problem: online.isEmpty
                    ? "no CPU is online"
                    : "none of the online CPUs \(CPUList.format(online)) is in the allowed set \"\(allowed)\"")
        }

        guard files.isDirectory("devices/system/node") else {
            self = .singleNode(cpus: usable)
            return
        }
        self = try Self.loadNodes(files, usableCPUs: usable)
    }

    private static func loadNodes(_ files: SysfsFiles, usableCPUs: [Int]) throws(TopologyError) -> NUMATopology {
        let nodeOnlineFile = "devices/system/node/online"
        let nodeIDs = try files.readList(nodeOnlineFile)
        guard !nodeIDs.isEmpty else {
            throw TopologyError(file: files.path(nodeOnlineFile), problem: "no node is online")
        }
        let hasMemoryFile = "devices/system/node/has_memory"
        let memoryNodes: Set<Int>? = files.exists(hasMemoryFile) ? Set(try files.readList(hasMemoryFile)) : nil

        let usable = Set(usableCPUs)
        var nodes: [NUMANode] = []
        var distances: [Int: [Int: Int]] = [:]
        var ownerOfCPU: [Int: Int] = [:]
        for id in nodeIDs {
            let cpuListFile = "devices/system/node/node\(id)/cpulist"
            let cpus = try files.readList(cpuListFile)
            for cpu in cpus {
                if let other = ownerOfCPU[cpu] {
                    throw TopologyError(file: files.path(cpuListFile), problem: "CPU \(cpu) is also listed by node\(other)")
                }
                ownerOfCPU[cpu] = id
            }
            nodes.append(NUMANode(id: id, cpus: cpus.filter(usable.contains), hasMemory: memoryNodes?.contains(id) ?? true))

            let distanceFile = "devices/system/node/node\(id)/distance"
            let row = try files.readNumbers(distanceFile)
            guard row.count == nodeIDs.count else {
                throw TopologyError(
                    file: files.path(distanceFile),
                    problem: "has \(row.count) distances but \(nodeIDs.count) nodes are online (\(CPUList.format(nodeIDs)))")
            }
            distances[id] = Dictionary(uniqueKeysWithValues: zip(nodeIDs, row))
        }

        guard nodes.contains(where: \.hasCPUs) else {
            throw TopologyError(
                file: files.path("devices/system/node"),
                problem: "no online node lists any of the usable CPUs \(CPUList.format(usableCPUs))")
        }
        return NUMATopology(nodes: nodes, distances: distances, onlineCPUs: usableCPUs)
    }

    /// The topology of this host, restricted to the CPUs this process may run on.
    public static func current() throws(TopologyError) -> NUMATopology {
        try NUMATopology(sysfsRoot: "/sys", allowedCPUs: processAllowedCPUs())
    }
}
