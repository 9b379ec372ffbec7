/// What a new qcow2 image is to be (blockdev-create's qcow2 options; qemu-img create -o).
/// `validate` refuses what QEMU refuses, with QEMU's texts where it has one.
public struct Qcow2CreateOptions: Sendable, Equatable {
    public static let defaultClusterSize: UInt64 = 64 << 10

    /// Virtual size in bytes (a multiple of 512).
    public var size: UInt64
    /// 2 (compat 0.10) or 3 (compat 1.1, the default).
    public var version: UInt32 = 3
    public var clusterSize: UInt64 = defaultClusterSize
    public var refcountBits: UInt64 = 16
    public var lazyRefcounts = false
    /// The name written into the header (not opened or checked here).
    public var backingFile: String?
    /// The backing format extension ("qcow2", "raw", ...).
    public var backingFormat: String?

    public init(size: UInt64) { self.size = size }

    public var clusterBits: UInt32 { UInt32(clusterSize.trailingZeroBitCount) }
    public var refcountOrder: UInt32 { UInt32(refcountBits.trailingZeroBitCount) }

    public func validate() throws(Qcow2FormatError) {
        guard size % 512 == 0 else {
            throw Qcow2FormatError(.unsupported, "Image size must be a multiple of 512 bytes")
        }
        guard size <= Qcow2Header.maximumVirtualSize else {
            throw Qcow2FormatError(.unsupported, "Image size is too large (at most 2^61 bytes)")
        }
        guard version == 2 || version == 3 else {
            throw Qcow2FormatError(.unsupported, "Invalid qcow2 version \(version) (use v2 or v3)")
        }
        guard clusterSize.nonzeroBitCount == 1, clusterSize >= 512, clusterSize <= 2 << 20 else {
            throw Qcow2FormatError(.unsupported, "Cluster size must be a power of two between 512 and 2048k")
        }
        guard refcountBits.nonzeroBitCount == 1, refcountBits <= 64 else {
            throw Qcow2FormatError(.unsupported, "Refcount width must be a power of two and may not exceed 64 bits")
        }
        if version < 3 && refcountBits != 16 {
            throw Qcow2FormatError(.unsupported, "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
        }
        if version < 3 && lazyRefcounts {
            throw Qcow2FormatError(.unsupported, "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)")
        }
        if backingFormat != nil && backingFile == nil {
            throw Qcow2FormatError(.unsupported, "Backing format cannot be used without backing file")
        }
        if let backingFile {
            let bytes = backingFile.utf8.count
            guard bytes > 0, !backingFile.utf8.contains(0) else {
                throw Qcow2FormatError(.unsupported, "Backing file name must not be empty")
            }
            guard bytes <= Int(Qcow2Header.maximumBackingFileNameLength) else {
                throw Qcow2FormatError(.unsupported, "Backing file name too long (\(bytes) bytes, at most \(Qcow2Header.maximumBackingFileNameLength))")
            }
        }
        if let backingFormat, backingFormat.isEmpty || backingFormat.utf8.count > 16 {
            throw Qcow2FormatError(.unsupported, "Invalid backing format '\(backingFormat)'")
        }
        let l1Entries = Qcow2Layout.l1EntriesNeeded(size: size, clusterBits: clusterBits)
        guard l1Entries * 8 <= Qcow2Header.maximumL1Bytes else {
            throw Qcow2FormatError(.unsupported, "Image size \(size) is too large for cluster size \(clusterSize): its L1 table would exceed \(Qcow2Header.maximumL1Bytes >> 20) MiB (use a larger cluster-size)")
        }
    }
}
