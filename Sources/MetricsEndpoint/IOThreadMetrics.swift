import SpindleDaemon

/// Per IOThread: query-iothreads' figures (label `iothread`).
enum IOThreadMetrics {
    static func write(_ sample: DaemonMetricsSample, into writer: MetricFamilyWriter) {
        for thread in sample.iothreads {
            let labels = [("iothread", thread.id)]
            writer.counter("spindle_iothread_poll_hits_total", help: "Polling turns that found work before the window closed.",
                           labels: labels, thread.pollHits)
            writer.counter("spindle_iothread_poll_misses_total", help: "Polling turns that found no work and went to sleep.",
                           labels: labels, thread.pollMisses)
            writer.counter("spindle_iothread_sleeps_total", help: "Times the IOThread slept in the kernel waiting for work.",
                           labels: labels, thread.sleeps)
            writer.counter("spindle_iothread_poll_yields_total",
                           help: "Polling turns that gave the CPU to io_uring's workers while requests waited on the kernel.",
                           labels: labels, thread.pollYields)
            writer.gauge("spindle_iothread_poll_window_seconds", help: "The adaptive polling window now.",
                         labels: labels, Double(thread.pollCurrentNs) / 1e9)
            writer.gauge("spindle_iothread_poll_max_seconds", help: "poll-max-ns: the longest polling window.",
                         labels: labels, Double(thread.pollMaxNs) / 1e9)
            writer.gauge("spindle_iothread_queues", help: "Virtqueues the IOThread serves.", labels: labels, thread.queues.count)
            writer.counter("spindle_iothread_sleep_seconds_total", help: "Time the IOThread slept in the kernel waiting for work.",
                           labels: labels, seconds: Double(thread.sleepNs) / 1e9)
            writer.counter("spindle_iothread_poll_seconds_total", help: "Time the IOThread busy-polled for work.",
                           labels: labels, seconds: Double(thread.pollNs) / 1e9)
            writer.counter("spindle_iothread_busy_seconds_total",
                           help: "Time the IOThread worked (kicks, completions, submissions): its life less sleep and polling.",
                           labels: labels, seconds: Double(thread.busyNs) / 1e9)
        }
    }
}
