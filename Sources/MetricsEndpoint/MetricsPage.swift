import ControlThread
import SpindleDaemon

/// The `/metrics` page: one sample from the control thread, rendered by family group.
///
/// More figures plug in the same way: a field of `DaemonMetricsSample` filled by
/// `Daemon.metricsSample()`, and one `write(sample, into:)` file beside these.
public enum MetricsPage {
    /// Renders a sample taken earlier.
    public static func render(_ sample: DaemonMetricsSample) -> [UInt8] {
        let writer = MetricFamilyWriter()
        DaemonMetrics.write(sample, into: writer)
        IOThreadMetrics.write(sample, into: writer)
        ExportMetrics.write(sample, into: writer)
        NodeMetrics.write(sample, into: writer)
        JobMetrics.write(sample, into: writer)
        BlockStatsMetrics.write(sample, into: writer)
        ThrottleMetrics.write(sample, into: writer)
        return writer.render()
    }

    /// Samples `daemon` on the control thread (blocking the calling plain thread, never an
    /// event loop) and renders the page.
    public static func scrape(_ daemon: Daemon) -> [UInt8] {
        render(runOnControlThread { daemon.metricsSample() })
    }
}
