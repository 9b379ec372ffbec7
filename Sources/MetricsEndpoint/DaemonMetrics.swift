import SpindleDaemon

/// Daemon-wide figures: build information and how many of each thing exist.
enum DaemonMetrics {
    static func write(_ sample: DaemonMetricsSample, into writer: MetricFamilyWriter) {
        writer.gauge("spindle_build_info", help: "Spindle's version; always 1.", labels: [("version", sample.version)], 1)
        writer.gauge("spindle_exports", help: "vhost-user-blk exports.", sample.exports.count)
        writer.gauge("spindle_nodes", help: "Named block nodes.", sample.nodes.count)
        writer.gauge("spindle_iothreads", help: "IOThreads (named and automatic).", sample.iothreads.count)
        writer.gauge("spindle_jobs", help: "Block jobs, in any status.", sample.jobs.count)
    }
}
