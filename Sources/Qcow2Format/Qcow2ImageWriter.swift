/// A new, empty qcow2 image as bytes to write: pure layout, no I/O. The caller empties the
/// file, sets its length to `fileLength` (so everything not written reads zeroes: the L1
/// table and the unused parts of the refcount clusters) and writes `writes`.
///
/// Layout (as qemu-img's): cluster 0 the header, its extensions and the backing file name;
/// then the refcount table, the refcount blocks, the L1 table. Every one of those clusters
/// has refcount 1; no L2 table or data cluster exists, so the whole disk is unallocated
/// (it reads from the backing file, or zeroes).
public struct Qcow2NewImage: Sendable, Equatable {
    public struct Write: Sendable, Equatable {
        public var offset: UInt64
        public var bytes: [UInt8]
    }

    public var header: Qcow2Header
    public var writes: [Write]
    public var fileLength: UInt64
    /// Clusters in use (all metadata).
    public var clusterCount: UInt64
}

public enum Qcow2ImageWriter {
    /// qemu-img 7.2's v3 header length: the 104 bytes of fields and the compression type byte, padded.
    static let version3HeaderLength = 112

    public static func layout(_ options: Qcow2CreateOptions) throws(Qcow2FormatError) -> Qcow2NewImage {
        try options.validate()
        let clusterSize = options.clusterSize
        let l1Entries = Qcow2Layout.l1EntriesNeeded(size: options.size, clusterBits: options.clusterBits)
        let l1Clusters = (l1Entries * 8 + clusterSize - 1) / clusterSize
        let refcountsPerBlock = clusterSize * 8 / options.refcountBits
        let entriesPerTableCluster = clusterSize / 8
        // The refcount clusters must count themselves: grow until the count is stable.
        var tableClusters: UInt64 = 1
        var blockCount: UInt64 = 1
        while true {
            let total = 1 + tableClusters + blockCount + l1Clusters
            let blocks = (total + refcountsPerBlock - 1) / refcountsPerBlock
            let table = max(1, (blocks + entriesPerTableCluster - 1) / entriesPerTableCluster)
            if blocks == blockCount && table == tableClusters { break }
            blockCount = max(blockCount, blocks)
            tableClusters = max(tableClusters, table)
        }
        let tableOffset = clusterSize
        let blocksOffset = tableOffset + tableClusters * clusterSize
        let l1Offset = blocksOffset + blockCount * clusterSize
        let clusterCount = 1 + tableClusters + blockCount + l1Clusters
        guard tableClusters * clusterSize <= Qcow2Header.maximumRefcountTableBytes else {
            throw Qcow2FormatError(.unsupported, "Image size \(options.size) needs a refcount table larger than \(Qcow2Header.maximumRefcountTableBytes >> 20) MiB (use a larger cluster-size)")
        }

        var header = Qcow2Header(
            version: options.version, backingFileOffset: 0, backingFileSize: 0, clusterBits: options.clusterBits,
            size: options.size, cryptMethod: 0, l1Size: UInt32(l1Entries), l1TableOffset: l1Offset,
            refcountTableOffset: tableOffset, refcountTableClusters: UInt32(tableClusters), snapshotCount: 0,
            snapshotsOffset: 0, headerLength: UInt32(options.version == 3 ? version3HeaderLength : Qcow2Header.version2Length))
        header.refcountOrder = options.refcountOrder
        header.compatibleFeatures = options.lazyRefcounts ? Qcow2Features.lazyRefcounts : 0
        if let format = options.backingFormat {
            header.extensions = [Qcow2HeaderExtension(type: Qcow2HeaderExtension.backingFormat, data: Array(format.utf8))]
        }
        header.backingFileName = options.backingFile
        let headerBytes = try encode(&header)

        var writes = [Qcow2NewImage.Write(offset: 0, bytes: headerBytes)]
        var table: [UInt8] = []
        for index in 0..<blockCount { appendBigEndian(blocksOffset + index * clusterSize, to: &table) }
        writes.append(.init(offset: tableOffset, bytes: table))
        writes.append(.init(offset: blocksOffset, bytes: refcountOnes(count: clusterCount, order: options.refcountOrder)))
        return Qcow2NewImage(header: header, writes: writes, fileLength: clusterCount * clusterSize, clusterCount: clusterCount)
    }

    /// The header cluster's bytes up to the end of the backing file name: fields, extensions
    /// (each padded to 8 bytes), the end marker, the name. Sets the name's offset and size.
    static func encode(_ header: inout Qcow2Header) throws(Qcow2FormatError) -> [UInt8] {
        var extensions: [UInt8] = []
        for ext in header.extensions {
            appendBigEndian(ext.type, to: &extensions)
            appendBigEndian(UInt32(ext.data.count), to: &extensions)
            extensions += ext.data
            extensions += [UInt8](repeating: 0, count: (8 - ext.data.count % 8) % 8)
        }
        extensions += [UInt8](repeating: 0, count: 8)  // end marker
        let name = header.backingFileName.map { Array($0.utf8) } ?? []
        let nameOffset = Int(header.headerLength) + extensions.count
        guard UInt64(nameOffset + name.count) <= header.clusterSize else {
            throw Qcow2FormatError(.unsupported, "Backing file name and header extensions do not fit in the header cluster (\(header.clusterSize) bytes); use a larger cluster-size or a shorter name")
        }
        if !name.isEmpty {
            header.backingFileOffset = UInt64(nameOffset)
            header.backingFileSize = UInt32(name.count)
        }
        var bytes: [UInt8] = []
        appendBigEndian(Qcow2Header.magic, to: &bytes)
        appendBigEndian(header.version, to: &bytes)
        appendBigEndian(header.backingFileOffset, to: &bytes)
        appendBigEndian(header.backingFileSize, to: &bytes)
        appendBigEndian(header.clusterBits, to: &bytes)
        appendBigEndian(header.size, to: &bytes)
        appendBigEndian(header.cryptMethod, to: &bytes)
        appendBigEndian(header.l1Size, to: &bytes)
        appendBigEndian(header.l1TableOffset, to: &bytes)
        appendBigEndian(header.refcountTableOffset, to: &bytes)
        appendBigEndian(header.refcountTableClusters, to: &bytes)
        appendBigEndian(header.snapshotCount, to: &bytes)
        appendBigEndian(header.snapshotsOffset, to: &bytes)
        if header.version == 3 {
            appendBigEndian(header.incompatibleFeatures, to: &bytes)
            appendBigEndian(header.compatibleFeatures, to: &bytes)
            appendBigEndian(header.autoclearFeatures, to: &bytes)
            appendBigEndian(header.refcountOrder, to: &bytes)
            appendBigEndian(header.headerLength, to: &bytes)
            bytes.append(header.compressionType)
            bytes += [UInt8](repeating: 0, count: Int(header.headerLength) - bytes.count)
        }
        return bytes + extensions + name
    }

    /// A refcount block's leading bytes with the first `count` entries set to 1 (the
    /// encoding `Qcow2Entries.refcount` decodes). `count` may span several blocks: they
    /// are consecutive in the file, so their bytes are one run.
    static func refcountOnes(count: UInt64, order: UInt32) -> [UInt8] {
        let bits = 1 << Int(order)
        var bytes = [UInt8](repeating: 0, count: (Int(count) * bits + 7) / 8)
        for index in 0..<Int(count) {
            if bits < 8 {
                let perByte = 8 / bits
                bytes[index / perByte] |= UInt8(1) << UInt8((index % perByte) * bits)
            } else {
                bytes[(index + 1) * bits / 8 - 1] = 1  // big-endian: the last byte of the entry
            }
        }
        return bytes
    }

    static func appendBigEndian<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { bytes += $0 }
    }
}
