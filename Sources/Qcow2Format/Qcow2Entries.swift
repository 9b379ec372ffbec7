/// What one L2 entry says about a guest cluster (64-bit entries; extended L2 is refused
/// at open). Decoded on the data path: no allocation, no reference counting.
@frozen
public enum Qcow2L2Entry: Equatable, Sendable {
    /// Offset 0 and no zero flag: read from the backing node (zeroes without one).
    case unallocated
    /// The zero flag (bit 0): reads zeroes, even over a backing file.
    case zero
    /// Data at `hostOffset` (cluster-aligned) in the image file.
    case data(hostOffset: UInt64, copied: Bool)
    /// Deflate-compressed data: `byteCount` bytes at `hostOffset` (unaligned), an upper bound
    /// that may run past the end of the file.
    case compressed(hostOffset: UInt64, byteCount: UInt64)
    /// The entry contradicts the format; `Qcow2EntryProblem` says how.
    case corrupt(Qcow2EntryProblem)
}

@frozen
public enum Qcow2EntryProblem: UInt8, Equatable, Sendable, CustomStringConvertible {
    case reservedBitsSet
    case unalignedOffset
    case pointsIntoHeader
    case pointsIntoMetadata
    case pastEndOfFile
    /// Found on the data path rather than in an entry: an L1 entry already refused at open,
    /// compressed bytes that do not inflate to a whole cluster.
    case corruptL1Entry
    case compressedDataInvalid
    /// A write there needed the allocation path, which failed.
    case allocationFailed
    /// A write there was refused: this image's own L2 entry is corrupt or names a cluster
    /// of the header, L1 or refcount table (QEMU's overlap check: the image is corrupt).
    case writeOverlapsMetadata

    public var description: String {
        switch self {
        case .reservedBitsSet: return "reserved bits are set"
        case .unalignedOffset: return "its offset is not cluster-aligned"
        case .pointsIntoHeader: return "it points into the header cluster"
        case .pointsIntoMetadata: return "it points into the L1 or refcount table"
        case .pastEndOfFile: return "it points past the end of the file"
        case .corruptL1Entry: return "the L1 entry mapping it is corrupt"
        case .compressedDataInvalid: return "its compressed data does not inflate to a whole cluster"
        case .allocationFailed: return "a write there needed new metadata and that failed: an I/O error, a full disk, or inconsistent metadata"
        case .writeOverlapsMetadata: return "a write there would overwrite metadata (its L2 entry is corrupt or names a cluster of the header, L1 or refcount table)"
        }
    }
}

/// Bit layouts of L1, L2 and refcount-table entries (docs/interop/qcow2.txt).
public enum Qcow2Entries {
    public static let copiedFlag: UInt64 = 1 << 63
    public static let compressedFlag: UInt64 = 1 << 62
    public static let zeroFlag: UInt64 = 1
    /// Host offset bits 9..55 of L1 entries, standard L2 entries and refcount-table entries.
    public static let offsetMask: UInt64 = 0x00ff_ffff_ffff_fe00
    /// L1: everything but the offset and COPIED.
    public static let l1ReservedMask: UInt64 = ~(offsetMask | copiedFlag)
    /// Standard L2: bits 1..8 and 56..61.
    public static let l2ReservedMask: UInt64 = ~(offsetMask | copiedFlag | compressedFlag | zeroFlag)
    /// Refcount table: bits 0..8 (bits 56..63 of the offset field are allowed by the spec).
    public static let refcountTableReservedMask: UInt64 = 0x1ff

    /// Decodes an L1 entry: the L2 table's offset (0: none), or nil if it is corrupt
    /// (reserved bits, an unaligned offset, or the header cluster).
    @inlinable
    public static func l2TableOffset(l1Entry raw: UInt64, clusterBits: UInt32) -> UInt64? {
        if raw & l1ReservedMask != 0 { return nil }
        let offset = raw & offsetMask
        if offset & ((1 << UInt64(clusterBits)) - 1) != 0 { return nil }
        if offset != 0 && offset < (1 << UInt64(clusterBits)) { return nil }
        return offset
    }

    /// Decodes an L2 entry (host byte order).
    @inlinable
    public static func decodeL2(_ raw: UInt64, clusterBits: UInt32) -> Qcow2L2Entry {
        let clusterSize: UInt64 = 1 << UInt64(clusterBits)
        if raw & compressedFlag != 0 {
            // x = 62 - (cluster_bits - 8) offset bits, then the count of extra 512-byte sectors.
            let offsetBits = 62 - (UInt64(clusterBits) - 8)
            let hostOffset = raw & ((1 << offsetBits) - 1)
            let sectors = (raw >> offsetBits) & ((1 << (UInt64(clusterBits) - 8)) - 1)
            if hostOffset < clusterSize { return .corrupt(.pointsIntoHeader) }
            return .compressed(hostOffset: hostOffset, byteCount: (sectors + 1) * 512 - (hostOffset & 511))
        }
        if raw & l2ReservedMask != 0 { return .corrupt(.reservedBitsSet) }
        let offset = raw & offsetMask
        if raw & zeroFlag != 0 {
            // A preallocated zero cluster still reads zeroes; its offset must be sane though.
            if offset & (clusterSize - 1) != 0 { return .corrupt(.unalignedOffset) }
            return .zero
        }
        if offset == 0 { return .unallocated }
        if offset & (clusterSize - 1) != 0 { return .corrupt(.unalignedOffset) }
        if offset < clusterSize { return .corrupt(.pointsIntoHeader) }
        return .data(hostOffset: offset, copied: raw & copiedFlag != 0)
    }

    /// Decodes a refcount-table entry: the refcount block's offset (0: none), or nil if corrupt.
    public static func refcountBlockOffset(_ raw: UInt64, clusterBits: UInt32) -> UInt64? {
        if raw & refcountTableReservedMask != 0 { return nil }
        let offset = raw & ~refcountTableReservedMask
        if offset & ((1 << UInt64(clusterBits)) - 1) != 0 { return nil }
        if offset != 0 && offset < (1 << UInt64(clusterBits)) { return nil }
        return offset
    }

    /// Entry `index` of a refcount block whose entries are `1 << order` bits wide (order
    /// 0...6): below a byte, the low bits of each byte come first; from a byte up, big-endian.
    /// `block` must hold the whole cluster; nil if `index` is outside it.
    public static func refcount(in block: UnsafeRawBufferPointer, index: Int, order: UInt32) -> UInt64? {
        guard order <= 6, index >= 0 else { return nil }
        let bits = 1 << Int(order)
        guard index < block.count * 8 / bits else { return nil }
        if bits < 8 {
            let perByte = 8 / bits
            let byte = block[index / perByte]
            return UInt64((byte >> UInt8((index % perByte) * bits)) & UInt8((1 << bits) - 1))
        }
        let width = bits / 8
        var value: UInt64 = 0
        for i in 0..<width { value = value << 8 | UInt64(block[index * width + i]) }
        return value
    }
}
