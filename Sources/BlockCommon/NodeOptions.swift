/// Options of a block node as given by `--blockdev` (or, later, QMP `blockdev-add`).
public enum BlockDriverOptions: Sendable, Equatable {
    case file(FileOptions)
    case null(NullOptions)

    public var driverName: String {
        switch self {
        case .file: return "file"
        case .null: return "null-co"
        }
    }
}

public struct FileOptions: Sendable, Equatable {
    public var filename: String
    /// `cache.direct=on`: O_DIRECT, bypassing the host page cache.
    public var direct: Bool = false
    /// `cache.no-flush=on`: flushes are ignored (unsafe, for benchmarks).
    public var noFlush: Bool = false
    public var readOnly: Bool = false
    /// `auto-read-only=on`: open read-only when the image may not be opened for writing.
    public var autoReadOnly: Bool = false
    /// `locking=on|off|auto` as in QEMU; off skips OFD image locks.
    public var locking: Bool = true
    /// `discard=unmap|ignore`: whether guest discards punch holes (QEMU's default: ignore).
    public var discardUnmap: Bool = false
    public init(filename: String) { self.filename = filename }
}

public struct NullOptions: Sendable, Equatable {
    /// Virtual size in bytes (QEMU's default for null-co is 1 GiB).
    public var size: UInt64 = 1 << 30
    /// `read-zeroes=on`: reads fill the buffer with zeroes (else leave it untouched, as QEMU does).
    public var readZeroes: Bool = false
    public var readOnly: Bool = false
    public init() {}
}

public struct BlockdevOptions: Sendable, Equatable {
    public var nodeName: NodeName
    public var driver: BlockDriverOptions
    public init(nodeName: NodeName, driver: BlockDriverOptions) {
        self.nodeName = nodeName
        self.driver = driver
    }
    public var readOnly: Bool {
        switch driver {
        case .file(let f): return f.readOnly
        case .null(let n): return n.readOnly
        }
    }
}
