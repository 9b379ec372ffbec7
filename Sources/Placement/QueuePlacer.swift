/// Decides which CPU serves each virtqueue, and tracks how many queues each CPU serves.
///
/// Policy, per queue:
/// 1. Ring memory on a node with CPUs: serve from that node.
/// 2. Ring memory on a node without (usable) CPUs: serve from the nearest node with CPUs by the
///    distance table (ties: lowest node id). The decision's reason says so.
/// 3. Ring node unknown, or not a node of the topology: any CPU.
/// Within the chosen set, the CPU serving the fewest queues wins (ties: lowest CPU id), so
/// queues spread evenly.
///
/// A value type with no threads or globals: the owner (the control thread) keeps one and
/// calls `assign` at ring start and `release` at ring stop.
public struct QueuePlacer: Sendable {
    public let topology: NUMATopology
    /// The CPUs the placer chooses from: the topology's node CPUs, within the restriction if any.
    public let cpus: [Int]
    /// Candidate CPUs per node id; a node without candidates maps to [].
    private let cpusByNode: [Int: [Int]]
    private let nodeOfCPU: [Int: Int]
    /// How many queues each candidate CPU serves now.
    public private(set) var queueCounts: [Int: Int]

    /// - Parameter allowedCPUs: if given, only these CPUs are chosen (e.g. the CPUs of the
    ///   IOThreads a user named). Nodes left without CPUs behave like memory-only nodes.
    public init(topology: NUMATopology, allowedCPUs: Set<Int>? = nil) throws(PlacementError) {
        let effective = allowedCPUs.map(topology.restricted(to:)) ?? topology
        var cpusByNode: [Int: [Int]] = [:]
        var nodeOfCPU: [Int: Int] = [:]
        for node in effective.nodes {
            cpusByNode[node.id] = node.cpus
            for cpu in node.cpus { nodeOfCPU[cpu] = node.id }
        }
        guard !nodeOfCPU.isEmpty else {
            let wanted = allowedCPUs.map { " among the allowed CPUs \"\(CPUList.format($0))\"" } ?? ""
            throw PlacementError(
                "no CPU to place queues on\(wanted): the topology's CPUs are \"\(CPUList.format(topology.nodes.flatMap(\.cpus)))\"")
        }
        self.topology = topology
        self.cpus = nodeOfCPU.keys.sorted()
        self.cpusByNode = cpusByNode
        self.nodeOfCPU = nodeOfCPU
        self.queueCounts = Dictionary(uniqueKeysWithValues: nodeOfCPU.keys.map { ($0, 0) })
    }

    /// How many queues `cpu` serves (0 for a CPU the placer does not use).
    public func queueCount(onCPU cpu: Int) -> Int {
        queueCounts[cpu] ?? 0
    }

    /// The decision for a queue whose ring memory is on `ringNode`, without recording it.
    public func decide(ringNode: Int?) -> PlacementDecision {
        guard let ringNode else {
            return leastLoaded(of: cpus, ringNode: nil, prefix: "ring memory node unknown", scope: "of all CPUs")
        }
        guard let candidates = cpusByNode[ringNode] else {
            return leastLoaded(
                of: cpus, ringNode: ringNode,
                prefix: "ring memory on node \(ringNode), which is not an online node", scope: "of all CPUs")
        }
        if !candidates.isEmpty {
            return leastLoaded(
                of: candidates, ringNode: ringNode, prefix: "ring memory on node \(ringNode)", scope: "on node \(ringNode)")
        }

        let (nearest, distance) = nearestNodeWithCPUs(to: ringNode)
        let distanceText = distance.map { "distance \($0)" } ?? "distance unknown"
        return leastLoaded(
            of: cpusByNode[nearest] ?? [], ringNode: ringNode,
            prefix: "ring memory on node \(ringNode), \(whyNoCPUs(ringNode)); nearest node with CPUs is \(nearest) (\(distanceText))",
            scope: "on node \(nearest)")
    }

    /// Decides and records: the chosen CPU serves one more queue.
    public mutating func assign(ringNode: Int?) -> PlacementDecision {
        let decision = decide(ringNode: ringNode)
        queueCounts[decision.cpu, default: 0] += 1
        return decision
    }

    /// Records a queue placed on `cpu` by other means (an explicit iothread mapping), so later
    /// automatic decisions see its load. Returns false if the placer does not use `cpu`.
    @discardableResult
    public mutating func record(cpu: Int) -> Bool {
        guard queueCounts[cpu] != nil else { return false }
        queueCounts[cpu, default: 0] += 1
        return true
    }

    /// A queue served by `cpu` stopped. Returns false (and changes nothing) if `cpu` serves none.
    @discardableResult
    public mutating func release(cpu: Int) -> Bool {
        guard let count = queueCounts[cpu], count > 0 else { return false }
        queueCounts[cpu] = count - 1
        return true
    }

    /// Fewest queues first, then lowest CPU id. `candidates` is never empty.
    private func leastLoaded(of candidates: [Int], ringNode: Int?, prefix: String, scope: String) -> PlacementDecision {
        let cpu = candidates.min { (queueCount(onCPU: $0), $0) < (queueCount(onCPU: $1), $1) }!
        let count = queueCount(onCPU: cpu)
        return PlacementDecision(
            cpu: cpu, node: nodeOfCPU[cpu]!, ringNode: ringNode,
            reason: "\(prefix); CPU \(cpu) serves the fewest queues \(scope) (\(count) queue\(count == 1 ? "" : "s"))")
    }

    /// The node with candidate CPUs whose CPUs reach memory on `memoryNode` most cheaply:
    /// the smallest `distances[cpuNode][memoryNode]` (the table may be asymmetric, and the
    /// queue's accesses go from the serving CPU to the ring; a missing entry counts as
    /// farthest). Ties: lowest node id.
    private func nearestNodeWithCPUs(to memoryNode: Int) -> (node: Int, distance: Int?) {
        let withCPUs = cpusByNode.filter { !$0.value.isEmpty }.keys
        let nearest = withCPUs.min { a, b in
            (distanceFrom(a, to: memoryNode), a) < (distanceFrom(b, to: memoryNode), b)
        }!
        return (nearest, topology.distance(from: nearest, to: memoryNode))
    }

    private func distanceFrom(_ from: Int, to: Int) -> Int {
        topology.distance(from: from, to: to) ?? Int.max
    }

    private func whyNoCPUs(_ node: Int) -> String {
        topology.node(node)?.hasCPUs == true ? "whose CPUs are all outside the allowed set" : "which has no CPUs"
    }
}
