/// Options of a block node as given by `--blockdev` (or, later, QMP `blockdev-add`).
public enum BlockDriverOptions: Sendable, Equatable {
    case file(FileOptions)
    case null(NullOptions)
    /// TEST ONLY: the delay/fault-injection filter (QEMU's blkdebug, in short).
    case delay(DelayFilterOptions)
    /// A Ceph RBD image (librbd, loaded at run time).
    case rbd(RbdOptions)

    public var driverName: String {
        switch self {
        case .file: return "file"
        case .null: return "null-co"
        case .delay: return "x-delay"
        case .rbd: return "rbd"
        }
    }

    /// Nodes this one is built on (a filter's `file`); they must exist when it opens.
    public var childNodeNames: [NodeName] {
        switch self {
        case .file, .null, .rbd: return []
        case .delay(let delay): return [delay.child]
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

/// `driver=x-delay` (TEST ONLY, for tests and benchmarks, as QEMU's blkdebug and null-co's
/// latency-ns): a filter over node `child` that holds every `holdEvery`th completion back
/// for `holdMilliseconds` (so completions go out of order) and fails every `failEvery`th
/// request with `failErrno`. 0 turns either off.
public struct DelayFilterOptions: Sendable, Equatable {
    public var child: NodeName
    public var holdEvery: UInt64 = 0
    public var holdMilliseconds: UInt64 = 50
    public var failEvery: UInt64 = 0
    /// A positive errno (EIO by default).
    public var failErrno: Int32 = 5
    public init(child: NodeName) { self.child = child }
}

public struct BlockdevOptions: Sendable, Equatable {
    public var nodeName: NodeName
    public var driver: BlockDriverOptions
    /// `active=off` (QEMU 10's blockdev-add "active": false): open the image but take no
    /// permissions or image locks, so that another process (a migration's source) may keep
    /// writing it until `blockdev-set-active` hands it over.
    public var active: Bool = true
    public init(nodeName: NodeName, driver: BlockDriverOptions) {
        self.nodeName = nodeName
        self.driver = driver
    }
    public var readOnly: Bool {
        switch driver {
        case .file(let f): return f.readOnly
        case .null(let n): return n.readOnly
        case .delay: return false  // a filter is as writable as its child
        case .rbd(let r): return r.readOnly
        }
    }
}
