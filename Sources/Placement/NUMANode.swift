/// One NUMA node of the host as the placer sees it.
public struct NUMANode: Equatable, Hashable, Sendable {
    public let id: Int
    /// The node's CPUs that are online and that the process may run on, ascending. Empty for a
    /// memory-only node (or one whose CPUs are all offline or outside the affinity mask).
    public let cpus: [Int]
    /// Whether the node has memory. When sysfs does not say (no `has_memory`), assumed true.
    public let hasMemory: Bool

    public init(id: Int, cpus: [Int], hasMemory: Bool = true) {
        self.id = id
        self.cpus = Array(Set(cpus)).sorted()
        self.hasMemory = hasMemory
    }

    public var hasCPUs: Bool { !cpus.isEmpty }
}
