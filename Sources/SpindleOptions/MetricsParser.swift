import BlockCommon

/// Where `--metrics` serves `GET /metrics` (the Prometheus text format).
public enum MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    /// A TCP socket: `host` is an address or a name resolved at start-up.
    case inet(host: String, port: Int)
    /// A UNIX socket path, removed again at exit.
    case unix(path: String)

    public var description: String {
        switch self {
        case .inet(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return path
        }
    }
}

/// `--metrics addr.type=inet,addr.host=H,addr.port=P` or `addr.type=unix,addr.path=PATH`.
public struct MetricsEndpointOptions: Sendable, Equatable {
    public var address: MetricsAddress

    public init(address: MetricsAddress) { self.address = address }
}

/// Parses `--metrics` (keyval or JSON, with QEMU's SocketAddress shape under `addr`).
struct MetricsParser {
    static let option = "--metrics"
    static let inetKeys = ["addr.type", "addr.host", "addr.port"]
    static let unixKeys = ["addr.type", "addr.path"]

    static func parse(_ text: String) throws(CommandLineError) -> MetricsEndpointOptions {
        let reader = try OptionReader(option: option, text: text, impliedKey: nil)
        guard let type = try reader.choice("addr.type", ["inet", "unix"]) else {
            throw reader.missing("addr.type", hint: "write addr.type=inet,addr.host=127.0.0.1,addr.port=9109 or addr.type=unix,addr.path=PATH")
        }
        if type == "unix" {
            try reader.rejectUnknownKeys(allowed: unixKeys, context: "--metrics with addr.type=unix")
            return MetricsEndpointOptions(address: .unix(path: try reader.socketPath("addr.path", hint: "the UNIX socket to serve /metrics on")))
        }
        try reader.rejectUnknownKeys(allowed: inetKeys, context: "--metrics with addr.type=inet")
        guard let host = try reader.string("addr.host") else {
            throw reader.missing("addr.host", hint: "e.g. addr.host=127.0.0.1 to serve this host only")
        }
        guard !host.isEmpty else { throw reader.error("'addr.host' must not be empty (e.g. 127.0.0.1)") }
        return MetricsEndpointOptions(address: .inet(host: host, port: try port(reader)))
    }

    /// The TCP port: text in keyval and (as QEMU's InetSocketAddress) in JSON; a JSON number too.
    private static func port(_ reader: OptionReader) throws(CommandLineError) -> Int {
        let hint = "a port from 1 to 65535, e.g. addr.port=9109"
        guard let value = try reader.value(at: "addr.port") else { throw reader.missing("addr.port", hint: hint) }
        let text: String
        switch value {
        case .string(let string): text = string
        case .number(let number) where !reader.isFromKeyval: text = number
        default: throw reader.error("'addr.port' must be \(hint), not \(value.typeName)")
        }
        guard let port = Int(text), (1...65535).contains(port) else {
            throw reader.error("invalid port '\(text)' for 'addr.port' (use \(hint))")
        }
        return port
    }
}
