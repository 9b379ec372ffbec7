/// The geometry of an image whose header was checked against the file: where its tables
/// are, and the metadata ranges no data cluster may point into. Everything `validate`
/// accepts can be read without overflow and without reading past the file.
@frozen
public struct Qcow2Layout: Sendable, Equatable {
    public var clusterBits: UInt32
    public var virtualSize: UInt64
    public var fileLength: UInt64
    public var l1Offset: UInt64
    public var l1Size: UInt32
    public var refcountTableOffset: UInt64
    public var refcountTableBytes: UInt64

    @inlinable public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    @inlinable public var l2Bits: UInt32 { clusterBits - 3 }
    /// Guest bytes one L2 table maps.
    @inlinable public var bytesPerL2Table: UInt64 { clusterSize << UInt64(l2Bits) }
    @inlinable public var l1Bytes: UInt64 { UInt64(l1Size) * 8 }
    /// L2 tables the virtual size needs (the L1 entries that can be in use).
    public var l2TablesNeeded: UInt64 { Self.l1EntriesNeeded(size: virtualSize, clusterBits: clusterBits) }

    public init(clusterBits: UInt32, virtualSize: UInt64, fileLength: UInt64, l1Offset: UInt64, l1Size: UInt32,
                refcountTableOffset: UInt64, refcountTableBytes: UInt64) {
        self.clusterBits = clusterBits
        self.virtualSize = virtualSize
        self.fileLength = fileLength
        self.l1Offset = l1Offset
        self.l1Size = l1Size
        self.refcountTableOffset = refcountTableOffset
        self.refcountTableBytes = refcountTableBytes
    }

    static func l1EntriesNeeded(size: UInt64, clusterBits: UInt32) -> UInt64 {
        let shift = UInt64(clusterBits) * 2 - 3
        return (size + (1 << shift) - 1) >> shift
    }

    /// Checks every table's offset and size against the file's length and against each
    /// other before anything is allocated or read.
    public static func validate(_ header: Qcow2Header, fileLength: UInt64) throws(Qcow2FormatError) -> Qcow2Layout {
        let clusterSize = header.clusterSize
        guard header.size <= Qcow2Header.maximumVirtualSize else {
            throw Qcow2FormatError(.corrupt, "virtual size \(header.size) is absurd (more than 2^61 bytes)")
        }
        if header.size % 512 != 0 {
            throw Qcow2FormatError(.unsupported, "virtual size \(header.size) is not a multiple of 512 bytes")
        }
        let l1Bytes = UInt64(header.l1Size) * 8
        guard l1Bytes <= Qcow2Header.maximumL1Bytes else {
            throw Qcow2FormatError(.corrupt, "L1 table of \(header.l1Size) entries is larger than \(Qcow2Header.maximumL1Bytes >> 20) MiB")
        }
        let needed = l1EntriesNeeded(size: header.size, clusterBits: header.clusterBits)
        guard UInt64(header.l1Size) >= needed else {
            throw Qcow2FormatError(.corrupt, "L1 table has \(header.l1Size) entries; virtual size \(header.size) needs \(needed)")
        }
        try checkTable("L1 table", offset: header.l1TableOffset, bytes: l1Bytes, clusterSize: clusterSize, fileLength: fileLength)
        let refcountBytes = UInt64(header.refcountTableClusters) * clusterSize
        guard header.refcountTableClusters > 0 else {
            throw Qcow2FormatError(.corrupt, "the image has no refcount table (refcount_table_clusters is 0)")
        }
        guard refcountBytes <= Qcow2Header.maximumRefcountTableBytes else {
            throw Qcow2FormatError(.corrupt, "refcount table of \(header.refcountTableClusters) clusters is larger than \(Qcow2Header.maximumRefcountTableBytes >> 20) MiB")
        }
        try checkTable("refcount table", offset: header.refcountTableOffset, bytes: refcountBytes, clusterSize: clusterSize, fileLength: fileLength)
        if l1Bytes > 0 && header.l1TableOffset < header.refcountTableOffset + refcountBytes
            && header.refcountTableOffset < header.l1TableOffset + l1Bytes {
            throw Qcow2FormatError(.corrupt, "the L1 table (byte \(header.l1TableOffset)) overlaps the refcount table (byte \(header.refcountTableOffset))")
        }
        guard header.snapshotCount <= Qcow2Header.maximumSnapshots else {
            throw Qcow2FormatError(.corrupt, "\(header.snapshotCount) snapshots is more than \(Qcow2Header.maximumSnapshots)")
        }
        if header.snapshotCount > 0 {
            // Each entry is at least 40 bytes; the table itself is read only by snapshot code.
            try checkTable("snapshot table", offset: header.snapshotsOffset, bytes: UInt64(header.snapshotCount) * 40,
                           clusterSize: clusterSize, fileLength: fileLength)
        }
        return Qcow2Layout(clusterBits: header.clusterBits, virtualSize: header.size, fileLength: fileLength,
                           l1Offset: header.l1TableOffset, l1Size: header.l1Size,
                           refcountTableOffset: header.refcountTableOffset, refcountTableBytes: refcountBytes)
    }

    private static func checkTable(_ name: String, offset: UInt64, bytes: UInt64, clusterSize: UInt64, fileLength: UInt64) throws(Qcow2FormatError) {
        guard bytes > 0 else { return }
        guard offset % clusterSize == 0 else {
            throw Qcow2FormatError(.corrupt, "\(name) offset \(offset) is not aligned to the cluster size (\(clusterSize))")
        }
        guard offset >= clusterSize else {
            throw Qcow2FormatError(.corrupt, "\(name) at byte \(offset) overlaps the header cluster")
        }
        guard offset <= fileLength, bytes <= fileLength - offset else {
            throw Qcow2FormatError(.corrupt, "\(name) (bytes \(offset)..<\(offset &+ bytes)) runs past the end of the file (\(fileLength) bytes)")
        }
    }

    /// Whether `length` bytes at `hostOffset` overlap the header cluster, the L1 table or
    /// the refcount table (a data cluster or an L2 table there is corruption). Cheap enough
    /// for the data path: three range compares.
    @inlinable
    public func overlapsMetadata(_ hostOffset: UInt64, length: UInt64) -> Bool {
        if hostOffset < clusterSize { return true }
        let end = hostOffset &+ length
        if l1Bytes > 0 && hostOffset < l1Offset + l1Bytes && l1Offset < end { return true }
        return hostOffset < refcountTableOffset + refcountTableBytes && refcountTableOffset < end
    }

    /// Checks an L2 entry's cluster against the metadata and the file: data clusters past the
    /// end of the file are allowed (they read zeroes, as in QEMU), metadata ones are not.
    @inlinable
    public func check(_ entry: Qcow2L2Entry) -> Qcow2L2Entry {
        switch entry {
        case .data(let hostOffset, _):
            return overlapsMetadata(hostOffset, length: clusterSize) ? .corrupt(.pointsIntoMetadata) : entry
        case .compressed(let hostOffset, _):
            if hostOffset >= fileLength { return .corrupt(.pastEndOfFile) }
            return overlapsMetadata(hostOffset, length: 1) ? .corrupt(.pointsIntoMetadata) : entry
        default:
            return entry
        }
    }

    /// Checks an L2 table's offset (from the L1 table): inside the file, not on the header,
    /// L1 or refcount table.
    public func checkL2Table(_ offset: UInt64) -> Qcow2EntryProblem? {
        if offset < clusterSize { return .pointsIntoHeader }
        if offset > fileLength || clusterSize > fileLength - offset { return .pastEndOfFile }
        return overlapsMetadata(offset, length: clusterSize) ? .pointsIntoMetadata : nil
    }
}
