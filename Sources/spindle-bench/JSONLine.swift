/// Builds one JSON object as a single line, keys in insertion order. Numbers are written
/// without Foundation: integers as they are, reals with a fixed number of decimals.
struct JSONLine {
    private var parts: [String] = []

    mutating func add(_ key: String, _ value: String) { parts.append("\(Self.quote(key)):\(Self.quote(value))") }
    mutating func add(_ key: String, _ value: Int) { parts.append("\(Self.quote(key)):\(value)") }
    mutating func add(_ key: String, _ value: UInt64) { parts.append("\(Self.quote(key)):\(value)") }
    mutating func add(_ key: String, _ value: Bool) { parts.append("\(Self.quote(key)):\(value)") }
    mutating func add(_ key: String, _ value: Double, decimals: Int) {
        parts.append("\(Self.quote(key)):\(Self.fixed(value, decimals))")
    }
    mutating func add(_ key: String, _ value: [Int]) {
        parts.append("\(Self.quote(key)):[\(value.map(String.init).joined(separator: ","))]")
    }
    mutating func add(_ key: String, _ values: [Double], decimals: Int) {
        parts.append("\(Self.quote(key)):[\(values.map { Self.fixed($0, decimals) }.joined(separator: ","))]")
    }
    mutating func add(_ key: String, object: JSONLine) { parts.append("\(Self.quote(key)):\(object.text)") }
    mutating func addNull(_ key: String) { parts.append("\(Self.quote(key)):null") }

    var text: String { "{" + parts.joined(separator: ",") + "}" }

    /// `value` rounded to `decimals` places, e.g. fixed(2.345, 2) == "2.35"; null if not finite.
    static func fixed(_ value: Double, _ decimals: Int) -> String {
        guard value.isFinite else { return "null" }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        guard scaled < 9.0e18 else { return "\(value)" }
        let integer = UInt64(scaled)
        let sign = value < 0 && integer != 0 ? "-" : ""
        let divisor = UInt64(scale)
        guard decimals > 0 else { return sign + String(integer) }
        var fraction = String(integer % divisor)
        while fraction.count < decimals { fraction = "0" + fraction }
        return "\(sign)\(integer / divisor).\(fraction)"
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
