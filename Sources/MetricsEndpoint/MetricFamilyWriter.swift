import Prometheus

/// Writes sampled figures into a Prometheus registry made for one scrape: every series is
/// set from the daemon's own counters at that moment, so nothing is counted between scrapes
/// and a series whose subject has gone (a deleted export) simply is not there next time.
final class MetricFamilyWriter {
    let registry = PrometheusCollectorRegistry()
    /// Histograms whose buckets the daemon counted itself (swift-prometheus' Histogram can only
    /// record values one by one), rendered by hand after the registry's families.
    private var histograms: [(name: String, help: String, series: [String])] = []

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

    /// A histogram from counted bins: `bins[i]` holds the observations below `upperBounds[i]`
    /// (and at or above the bound before it); one more bin than bounds, for the rest.
    func histogram(_ name: String, help: String, labels: [(String, String)], upperBounds: [Double], bins: [UInt64], sum: Double) {
        var series: [String] = []
        let labelText = labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",")
        let prefix = labelText.isEmpty ? "" : labelText + ","
        var cumulative: UInt64 = 0
        for (i, bound) in upperBounds.enumerated() where i < bins.count {
            cumulative &+= bins[i]
            series.append("\(name)_bucket{\(prefix)le=\"\(bound)\"} \(cumulative)")
        }
        let count = bins.reduce(0, &+)
        series.append("\(name)_bucket{\(prefix)le=\"+Inf\"} \(count)")
        series.append("\(name)_sum{\(labelText)} \(sum)")
        series.append("\(name)_count{\(labelText)} \(count)")
        if let index = histograms.firstIndex(where: { $0.name == name }) {
            histograms[index].series += series
        } else {
            histograms.append((name, help, series))
        }
    }

    /// A label value in the text format: backslash, double quote and newline escaped.
    private static func escape(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// The page: Prometheus text exposition format 0.0.4.
    func render() -> [UInt8] {
        var page = registry.emitToBuffer()
        for histogram in histograms {
            var text = "# HELP \(histogram.name) \(histogram.help)\n# TYPE \(histogram.name) histogram\n"
            for line in histogram.series { text += line + "\n" }
            page += Array(text.utf8)
        }
        return page
    }
}
