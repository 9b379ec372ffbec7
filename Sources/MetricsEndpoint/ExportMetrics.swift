import SpindleDaemon

/// Per export (labels `export`, `node`) and per running queue (`export`, `queue`, `iothread`).
enum ExportMetrics {
    static func write(_ sample: DaemonMetricsSample, into writer: MetricFamilyWriter) {
        for export in sample.exports {
            let labels = [("export", export.id), ("node", export.nodeName)]
            writer.gauge("spindle_export_frontends", help: "Connected vhost-user frontends (at most 1).",
                         labels: labels, export.frontends)
            writer.gauge("spindle_export_queues", help: "Virtqueues the device offers (num-queues).",
                         labels: labels, export.queues)
            writer.gauge("spindle_export_requests_in_flight", help: "Requests taken from the rings and not yet completed, all queues.",
                         labels: labels, export.inFlightRequests)
            writer.gauge("spindle_export_revoked", help: "1 once drive_del revoked the export's image (every request fails).",
                         labels: labels, export.revoked)
        }
        for queue in sample.queues {
            writer.gauge("spindle_queue_info", help: "A running virtqueue and the IOThread serving it; always 1.",
                         labels: [("export", queue.export), ("queue", "\(queue.queue)"), ("iothread", queue.iothread)], 1)
        }
    }
}
