/// The host's NUMA layout: nodes, their CPUs, and the distance table between nodes.
///
/// Build one from sysfs with `init(sysfsRoot:allowedCPUs:)` (see NUMATopology+Sysfs.swift),
/// or by hand with `init(nodes:distances:onlineCPUs:)`.
public struct NUMATopology: Equatable, Sendable {
    /// Ascending by id.
    public let nodes: [NUMANode]
    /// `distances[a][b]`: the kernel's relative cost for a CPU on node a to reach memory on node
    /// b (10 means local). Rows may be asymmetric.
    public let distances: [Int: [Int: Int]]
    /// Online CPUs the process may use, ascending.
    public let onlineCPUs: [Int]

    /// `onlineCPUs` defaults to the union of the nodes' CPUs.
    public init(nodes: [NUMANode], distances: [Int: [Int: Int]], onlineCPUs: [Int]? = nil) {
        self.nodes = nodes.sorted { $0.id < $1.id }
        self.distances = distances
        self.onlineCPUs = Array(Set(onlineCPUs ?? nodes.flatMap(\.cpus))).sorted()
    }

    /// A machine without NUMA: node 0 holds every CPU.
    public static func singleNode(cpus: [Int]) -> NUMATopology {
        NUMATopology(nodes: [NUMANode(id: 0, cpus: cpus)], distances: [0: [0: 10]], onlineCPUs: cpus)
    }

    public func node(_ id: Int) -> NUMANode? {
        nodes.first { $0.id == id }
    }

    /// The node whose CPU list holds `cpu`.
    public func node(ofCPU cpu: Int) -> Int? {
        nodes.first { $0.cpus.contains(cpu) }?.id
    }

    public func distance(from: Int, to: Int) -> Int? {
        distances[from]?[to]
    }

    /// The same topology with only the CPUs in `allowed` (an affinity mask, or the CPUs of the
    /// IOThreads a user named). Nodes stay, possibly without CPUs.
    public func restricted(to allowed: Set<Int>) -> NUMATopology {
        NUMATopology(
            nodes: nodes.map { NUMANode(id: $0.id, cpus: $0.cpus.filter(allowed.contains), hasMemory: $0.hasMemory) },
            distances: distances,
            onlineCPUs: onlineCPUs.filter(allowed.contains))
    }
}

extension NUMATopology: CustomStringConvertible {
    /// One line, for the daemon's startup log: "2 nodes: node0 cpus 0-3, node1 cpus 4-7".
    public var description: String {
        let parts = nodes.map { node in
            "node\(node.id) " + (node.hasCPUs ? "cpus \(CPUList.format(node.cpus))" : "no cpus")
                + (node.hasMemory ? "" : " no memory")
        }
        return "\(nodes.count) node\(nodes.count == 1 ? "" : "s"): " + parts.joined(separator: ", ")
    }
}
