/// Which CPU serves a virtqueue, and why (for the daemon's log and the monitor).
public struct PlacementDecision: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The CPU whose IOThread should serve the queue.
    public let cpu: Int
    /// The node of `cpu`.
    public let node: Int
    /// The node that holds the queue's ring memory, if known.
    public let ringNode: Int?
    /// One line, e.g. "ring memory on node 1; CPU 5 serves the fewest queues on node 1 (0 queues)".
    public let reason: String

    public init(cpu: Int, node: Int, ringNode: Int?, reason: String) {
        self.cpu = cpu
        self.node = node
        self.ringNode = ringNode
        self.reason = reason
    }

    /// Whether the queue is served from the node that holds its ring memory.
    public var isLocal: Bool { ringNode == node }

    public var description: String { "CPU \(cpu) (node \(node)): \(reason)" }
}
