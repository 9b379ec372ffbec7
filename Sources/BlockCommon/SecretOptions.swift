/// `--object secret,id=ID,data=...|file=PATH[,format=raw|base64]` (QEMU's secret object),
/// as parsed: where the secret comes from. The bytes themselves are read when the object is
/// created (`SecretValue`) and never appear in logs or query output.
public struct SecretObjectOptions: Sendable, Equatable, CustomStringConvertible {
    public enum Source: Sendable, Equatable {
        case data(String)
        case file(String)
    }
    public enum Format: String, Sendable, Equatable {
        case raw, base64
    }
    public var id: String
    public var source: Source
    public var format: Format = .raw

    public init(id: String, source: Source) {
        self.id = id
        self.source = source
    }

    /// Never shows inline data.
    public var description: String {
        switch source {
        case .data: return "secret \(id) (inline data, \(format.rawValue))"
        case .file(let path): return "secret \(id) (file \(path), \(format.rawValue))"
        }
    }
}
