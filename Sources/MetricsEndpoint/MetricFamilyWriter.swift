import Prometheus

/// Writes sampled figures into a Prometheus registry made for one scrape: every series is
/// set from the daemon's own counters at that moment, so nothing is counted between scrapes
/// and a series whose subject has gone (a deleted export) simply is not there next time.
struct MetricFamilyWriter {
    let registry = PrometheusCollectorRegistry()

    /// A counter (`name` ends in `_total`) set to `value`, the daemon's running count.
    func counter(_ name: String, help: String, labels: [(String, String)] = [], _ value: UInt64) {
        registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels).increment(by: Int64(clamping: value))
    }

    /// A counter of seconds (or another fractional unit), set to `value`.
    func counter(_ name: String, help: String, labels: [(String, String)] = [], seconds value: Double) {
        registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels).increment(by: max(value, 0))
    }

    /// A gauge set to `value`.
    func gauge(_ name: String, help: String, labels: [(String, String)] = [], _ value: Double) {
        registry.makeGauge(descriptor: Self.descriptor(name, help), labels: labels).set(to: value)
    }

    func gauge(_ name: String, help: String, labels: [(String, String)] = [], _ value: Int) {
        gauge(name, help: help, labels: labels, Double(value))
    }

    func gauge(_ name: String, help: String, labels: [(String, String)] = [], _ flag: Bool) {
        gauge(name, help: help, labels: labels, flag ? 1.0 : 0.0)
    }

    /// The whole name is given (units and `_total` included), so no part is added to it.
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// The page: Prometheus text exposition format 0.0.4.
    func render() -> [UInt8] {
        registry.emitToBuffer()
    }
}
