/// The feature bits of a header and what opening the image with them means: which are
/// refused (naming them), and which allow only a read-only open.
public struct Qcow2Features: Sendable, Equatable {
    public static let dirty: UInt64 = 1 << 0
    public static let corrupt: UInt64 = 1 << 1
    public static let externalDataFile: UInt64 = 1 << 2
    public static let compressionType: UInt64 = 1 << 3
    public static let extendedL2: UInt64 = 1 << 4
    /// Incompatible bits QEMU 7.2 knows; any other bit set makes the image unreadable to us.
    public static let knownIncompatible: UInt64 = 0x1f
    /// Compatible bit 0.
    public static let lazyRefcounts: UInt64 = 1 << 0

    public var incompatible: UInt64
    public var compatible: UInt64
    public var autoclear: UInt64
    /// Names from the image's feature name table: (type, bit) -> name.
    public var names: [FeatureKey: String]

    public struct FeatureKey: Hashable, Sendable {
        /// 0 incompatible, 1 compatible, 2 autoclear.
        public var type: UInt8
        public var bit: UInt8
    }

    public init(header: Qcow2Header) {
        incompatible = header.incompatibleFeatures
        compatible = header.compatibleFeatures
        autoclear = header.autoclearFeatures
        names = [:]
        // 48-byte entries: type, bit number, 46 bytes of NUL-padded name.
        for ext in header.extensions where ext.type == Qcow2HeaderExtension.featureNameTable {
            var index = 0
            while index + 48 <= ext.data.count {
                let nameBytes = ext.data[(index + 2)..<(index + 48)].prefix { $0 != 0 }
                names[FeatureKey(type: ext.data[index], bit: ext.data[index + 1])] = String(decoding: nameBytes, as: UTF8.self)
                index += 48
            }
        }
    }

    public var isDirty: Bool { incompatible & Self.dirty != 0 }
    public var isCorrupt: Bool { incompatible & Self.corrupt != 0 }
    public var hasLazyRefcounts: Bool { compatible & Self.lazyRefcounts != 0 }

    /// Refuses features Spindle cannot serve, with one line naming them. `readOnly` opens
    /// accept the dirty and corrupt bits (QEMU does too: reading needs no refcounts).
    public func check(header: Qcow2Header, readOnly: Bool) throws(Qcow2FormatError) {
        if header.cryptMethod != 0 {
            throw Qcow2FormatError(.unsupported, "the image is encrypted (crypt_method \(header.cryptMethod)); encrypted qcow2 images are not supported (decrypt it with qemu-img convert)")
        }
        let unknown = incompatible & ~Self.knownIncompatible
        if unknown != 0 {
            let bits = (0..<64).filter { unknown & (1 << UInt64($0)) != 0 }.map { bit in
                names[FeatureKey(type: 0, bit: UInt8(bit))].map { "\(bit) (\($0))" } ?? "\(bit)"
            }
            throw Qcow2FormatError(.unsupported, "the image uses unknown incompatible feature bit\(bits.count > 1 ? "s" : "") \(bits.joined(separator: ", ")); it needs a newer implementation")
        }
        if incompatible & Self.externalDataFile != 0 || header.extensions.contains(where: { $0.type == Qcow2HeaderExtension.externalDataFile }) {
            throw Qcow2FormatError(.unsupported, "the image keeps its data in an external data file (data-file); external data files are not supported")
        }
        if incompatible & Self.extendedL2 != 0 {
            throw Qcow2FormatError(.unsupported, "the image uses extended L2 entries (extended_l2=on, subclusters); they are not supported (convert with qemu-img convert -O qcow2)")
        }
        switch header.compressionType {
        case 0: break
        case 1:
            throw Qcow2FormatError(.unsupported, "the image uses zstd compression (compression_type=zstd); only zlib is supported (convert with qemu-img convert -O qcow2 -o compression_type=zlib)")
        default:
            throw Qcow2FormatError(.corrupt, "unknown compression type \(header.compressionType) in the header")
        }
        if header.compressionType != 0 && incompatible & Self.compressionType == 0 {
            throw Qcow2FormatError(.corrupt, "compression type \(header.compressionType) is set but the compression-type incompatible bit is not")
        }
        if !readOnly && isCorrupt {
            throw Qcow2FormatError(.corrupt, "the image is marked corrupt; it can only be opened read-only (repair it with qemu-img check -r all)")
        }
        if !readOnly && isDirty {
            throw Qcow2FormatError(.unsupported, "the image is marked dirty (its refcounts need a repair); open it read-only or run qemu-img check -r all")
        }
    }
}
