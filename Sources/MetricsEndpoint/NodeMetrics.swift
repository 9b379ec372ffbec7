import SpindleDaemon

/// Per named block node (label `node`): query-named-block-nodes' figures.
enum NodeMetrics {
    static func write(_ sample: DaemonMetricsSample, into writer: MetricFamilyWriter) {
        for node in sample.nodes {
            let labels = [("node", node.nodeName), ("driver", node.driver)]
            writer.gauge("spindle_node_size_bytes", help: "The node's virtual size.", labels: labels, Double(node.virtualSize))
            writer.gauge("spindle_node_active", help: "1 while the node is active (blockdev-set-active).", labels: labels, node.active)
            writer.gauge("spindle_node_read_only", help: "1 if the node is read-only.", labels: labels, node.readOnly)
        }
    }
}
