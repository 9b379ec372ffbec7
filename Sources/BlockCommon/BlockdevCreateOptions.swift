/// blockdev-create's `options` after the monitor checked their types (QEMU's
/// BlockdevCreateOptions, the drivers Spindle creates images for).
public enum BlockdevCreateOptions: Sendable, Equatable {
    /// `driver: file`: creates (or empties) a file of `size` bytes.
    case file(filename: String, size: UInt64, preallocation: Preallocation)
    /// `driver: qcow2`: writes a new, empty qcow2 image into `file`.
    case qcow2(BlockdevCreateQcow2)

    /// QEMU's PreallocMode; Spindle creates `off` (sparse) and `falloc` (file only).
    public enum Preallocation: String, Sendable, Equatable {
        case off, metadata, falloc, full
    }

    public var driverName: String {
        switch self {
        case .file: return "file"
        case .qcow2: return "qcow2"
        }
    }
}

/// The qcow2 image to write and where (QEMU's BlockdevCreateOptionsQcow2). nil members take
/// QEMU's defaults (v3, 64 KiB clusters, 16-bit refcounts).
public struct BlockdevCreateQcow2: Sendable, Equatable {
    /// `file`: a node name, or an inline `{"driver": "file", "filename": ...}` opened for the
    /// creation only.
    public var file: Qcow2Options.File
    public var size: UInt64
    /// 2 or 3.
    public var version: UInt32?
    public var clusterSize: UInt64?
    public var refcountBits: UInt64?
    public var lazyRefcounts: Bool?
    public var backingFile: String?
    public var backingFormat: String?
    /// Only `off` is created; other modes end the job with an error.
    public var preallocation: BlockdevCreateOptions.Preallocation = .off

    public init(file: Qcow2Options.File, size: UInt64) {
        self.file = file
        self.size = size
    }
}
