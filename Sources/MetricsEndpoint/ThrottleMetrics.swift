import SpindleDaemon

/// Per throttle group (label `group`): its limits, and the requests that waited for them.
enum ThrottleMetrics {
    static func write(_ sample: DaemonMetricsSample, into writer: MetricFamilyWriter) {
        for group in sample.throttleGroups {
            let labels = [("group", group.id)]
            writer.counter("spindle_throttle_waited_requests_total", help: "Requests that waited for the group's limits.",
                           labels: labels, group.waitedRequests)
            writer.counter("spindle_throttle_passed_requests_total", help: "Requests that went at once, within the group's limits.",
                           labels: labels, group.passedRequests)
            writer.gauge("spindle_throttle_waiting_requests", help: "Requests waiting for the group's limits now, on every IOThread.",
                         labels: labels, group.waitingRequests)
            for limit in group.limits {
                writer.gauge("spindle_throttle_limit", help: "A bucket's average limit (iops-* per second, bps-* bytes per second).",
                             labels: labels + [("bucket", limit.bucket)], Double(limit.average))
            }
        }
    }
}
