/// A qcow2 image header (docs/interop/qcow2.txt), versions 2 and 3, as the image has it:
/// every field, the header extensions byte-exact and in order (unknown ones included, so
/// that a later header update can write them back unchanged), and the backing file name.
/// `parse` checks the header on its own; `Qcow2Layout.validate` checks it against the file.
public struct Qcow2Header: Sendable, Equatable {
    public static let magic: UInt32 = 0x5146_49fb  // "QFI\xfb"
    /// v2 headers are 72 bytes; v3 ones at least 104 (qemu-img 7.2 writes 112).
    public static let version2Length = 72
    public static let version3MinimumLength = 104
    public static let minimumClusterBits: UInt32 = 9
    public static let maximumClusterBits: UInt32 = 21
    /// QEMU's limits: longer names and larger tables are refused before anything is read.
    public static let maximumBackingFileNameLength: UInt32 = 1023
    public static let maximumL1Bytes: UInt64 = 32 << 20
    public static let maximumRefcountTableBytes: UInt64 = 8 << 20
    public static let maximumSnapshots: UInt32 = 65536
    /// QEMU's QCOW_MAX_VIRTUAL_SIZE analogue: larger sizes overflow offset arithmetic.
    public static let maximumVirtualSize: UInt64 = 1 << 61

    public var version: UInt32
    public var backingFileOffset: UInt64
    public var backingFileSize: UInt32
    public var clusterBits: UInt32
    public var size: UInt64
    public var cryptMethod: UInt32
    public var l1Size: UInt32
    public var l1TableOffset: UInt64
    public var refcountTableOffset: UInt64
    public var refcountTableClusters: UInt32
    public var snapshotCount: UInt32
    public var snapshotsOffset: UInt64
    public var incompatibleFeatures: UInt64 = 0
    public var compatibleFeatures: UInt64 = 0
    public var autoclearFeatures: UInt64 = 0
    /// Refcount entries are 1 << refcountOrder bits wide (v2: always 4, 16 bits).
    public var refcountOrder: UInt32 = 4
    public var headerLength: UInt32
    /// 0 zlib, 1 zstd (byte 104, only in headers longer than 104 bytes).
    public var compressionType: UInt8 = 0
    /// The extensions in file order, without the end marker.
    public var extensions: [Qcow2HeaderExtension] = []
    /// The backing file's name as stored (nil: no backing file).
    public var backingFileName: String?

    public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    /// Entries per L2 table (64-bit entries; extended L2 is refused).
    public var l2Bits: UInt32 { clusterBits - 3 }
    public var refcountBits: UInt32 { 1 << refcountOrder }
    public var features: Qcow2Features { Qcow2Features(header: self) }

    /// The backing format extension's value ("raw", "qcow2"), if the image names one.
    public var backingFormat: String? {
        extensions.first { $0.type == Qcow2HeaderExtension.backingFormat }.map { String(decoding: $0.data, as: UTF8.self) }
    }

    /// Parses the header from the image's first bytes (`bytes` should hold the whole first
    /// cluster, or the whole file when it is shorter).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(Qcow2FormatError) -> Qcow2Header {
        let reader = Qcow2ByteReader(bytes: bytes)
        guard bytes.count >= version2Length, try reader.u32(0) == magic else {
            throw Qcow2FormatError(.notQcow2, "not a qcow2 image (no QFI\\xfb magic in the first bytes)")
        }
        let version = try reader.u32(4)
        guard version == 2 || version == 3 else {
            throw Qcow2FormatError(.unsupported, "qcow2 version \(version) is not supported (only versions 2 and 3)")
        }
        var header = Qcow2Header(
            version: version, backingFileOffset: try reader.u64(8), backingFileSize: try reader.u32(16),
            clusterBits: try reader.u32(20), size: try reader.u64(24), cryptMethod: try reader.u32(32),
            l1Size: try reader.u32(36), l1TableOffset: try reader.u64(40), refcountTableOffset: try reader.u64(48),
            refcountTableClusters: try reader.u32(56), snapshotCount: try reader.u32(60), snapshotsOffset: try reader.u64(64),
            headerLength: UInt32(version2Length))
        guard (minimumClusterBits...maximumClusterBits).contains(header.clusterBits) else {
            throw Qcow2FormatError(.corrupt, "cluster_bits \(header.clusterBits) is outside \(minimumClusterBits)...\(maximumClusterBits) (512 B to 2 MiB clusters)")
        }
        if version == 3 {
            header.incompatibleFeatures = try reader.u64(72)
            header.compatibleFeatures = try reader.u64(80)
            header.autoclearFeatures = try reader.u64(88)
            header.refcountOrder = try reader.u32(96)
            header.headerLength = try reader.u32(100)
            guard header.headerLength >= version3MinimumLength, UInt64(header.headerLength) <= header.clusterSize,
                  header.headerLength % 8 == 0 else {
                throw Qcow2FormatError(.corrupt, "header_length \(header.headerLength) must be a multiple of 8 between \(version3MinimumLength) and the cluster size (\(header.clusterSize))")
            }
            if header.headerLength > UInt32(version3MinimumLength) { header.compressionType = try reader.u8(104) }
        }
        guard header.refcountOrder <= 6 else {
            throw Qcow2FormatError(.corrupt, "refcount_order \(header.refcountOrder) is larger than 6 (64-bit refcounts)")
        }
        try header.parseExtensions(reader)
        try header.parseBackingFileName(reader)
        return header
    }

    public static func parse(_ bytes: [UInt8]) throws(Qcow2FormatError) -> Qcow2Header {
        do {
            return try bytes.withUnsafeBytes { buffer in try parse(buffer) }
        } catch let error as Qcow2FormatError {
            throw error
        } catch {
            throw Qcow2FormatError(.corrupt, "\(error)")
        }
    }

    /// Extensions follow the header until an end marker (type 0), the backing file name or
    /// the end of the first cluster, whichever comes first; each is padded to 8 bytes.
    private mutating func parseExtensions(_ reader: Qcow2ByteReader) throws(Qcow2FormatError) {
        var end = clusterSize
        if backingFileOffset != 0 { end = min(end, backingFileOffset) }
        end = min(end, UInt64(reader.bytes.count))
        var offset = UInt64(headerLength)
        while offset + 8 <= end {
            let type = try reader.u32(Int(offset))
            if type == 0 { return }
            let length = UInt64(try reader.u32(Int(offset + 4)))
            let padded = (length + 7) & ~7
            guard padded <= end - offset - 8 else {
                throw Qcow2FormatError(.corrupt, "header extension 0x\(String(type, radix: 16)) at byte \(offset) (\(length) bytes) runs past the header area (byte \(end))")
            }
            let data = try reader.slice(Int(offset + 8), Int(length))
            extensions.append(Qcow2HeaderExtension(type: type, data: data))
            offset += 8 + padded
        }
    }

    private mutating func parseBackingFileName(_ reader: Qcow2ByteReader) throws(Qcow2FormatError) {
        guard backingFileOffset != 0 else { return }
        guard backingFileSize <= Self.maximumBackingFileNameLength else {
            throw Qcow2FormatError(.corrupt, "backing file name is \(backingFileSize) bytes long (at most \(Self.maximumBackingFileNameLength))")
        }
        guard backingFileSize > 0 else {
            throw Qcow2FormatError(.corrupt, "backing file name at byte \(backingFileOffset) is empty")
        }
        guard backingFileOffset >= UInt64(headerLength), backingFileOffset <= clusterSize,
              UInt64(backingFileSize) <= clusterSize - backingFileOffset else {
            throw Qcow2FormatError(.corrupt, "backing file name (bytes \(backingFileOffset)..<\(backingFileOffset + UInt64(backingFileSize))) is not inside the header cluster after the header")
        }
        let name = try reader.slice(Int(backingFileOffset), Int(backingFileSize))
        guard !name.contains(0), let text = String(validating: name, as: UTF8.self) else {
            throw Qcow2FormatError(.corrupt, "backing file name is not valid UTF-8 text")
        }
        backingFileName = text
    }
}

/// One header extension as stored (the type and its data without padding).
public struct Qcow2HeaderExtension: Sendable, Equatable {
    public static let backingFormat: UInt32 = 0xe279_2aca
    public static let featureNameTable: UInt32 = 0x6803_f857
    public static let bitmaps: UInt32 = 0x2385_2875
    public static let encryption: UInt32 = 0x0537_be77
    public static let externalDataFile: UInt32 = 0x4441_5441

    public var type: UInt32
    public var data: [UInt8]
    public init(type: UInt32, data: [UInt8]) {
        self.type = type
        self.data = data
    }
}
