import SpindleDaemon

/// Per block job (labels `job`, `type`): query-jobs' progress, and its status as a state set
/// (one series per status, 1 for the current one), as Prometheus prefers to labels that change.
enum JobMetrics {
    static func write(_ sample: DaemonMetricsSample, into writer: MetricFamilyWriter) {
        for job in sample.jobs {
            let labels = [("job", job.id), ("type", job.type)]
            writer.gauge("spindle_job_progress_current_bytes", help: "Bytes the job has done (current-progress).",
                         labels: labels, Double(job.currentProgress))
            writer.gauge("spindle_job_progress_total_bytes", help: "Bytes the job expects to do; grows as the guest writes (total-progress).",
                         labels: labels, Double(job.totalProgress))
            for status in sample.jobStatuses {
                writer.gauge("spindle_job_status", help: "1 for the job's current status (QEMU's JobStatus), 0 for the others.",
                             labels: labels + [("status", status)], job.status == status)
            }
            writer.gauge("spindle_job_failed", help: "1 if the job ended with an error.", labels: labels, job.error != nil)
        }
    }
}
