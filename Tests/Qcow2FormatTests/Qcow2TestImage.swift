@testable import Qcow2Format

/// Builds qcow2 header bytes field by field, valid by default (v3, 512-byte clusters so the
/// images stay small: header in cluster 0, refcount table in 1, L1 in 2), for tests to break.
struct Qcow2TestImage {
    var version: UInt32 = 3
    var clusterBits: UInt32 = 9
    /// One L2 table's worth at 512-byte clusters (64 entries of 512 bytes).
    var size: UInt64 = 32 << 10
    var cryptMethod: UInt32 = 0
    var l1Size: UInt32 = 1
    var l1Offset: UInt64 = 1024
    var refcountTableOffset: UInt64 = 512
    var refcountTableClusters: UInt32 = 1
    var snapshotCount: UInt32 = 0
    var snapshotsOffset: UInt64 = 0
    var incompatible: UInt64 = 0
    var compatible: UInt64 = 0
    var autoclear: UInt64 = 0
    var refcountOrder: UInt32 = 4
    var headerLength: UInt32 = 112
    var compressionType: UInt8 = 0
    var extensions: [(type: UInt32, data: [UInt8])] = []
    var backingFile: [UInt8]? = nil
    /// Overrides backing_file_size (else the name's length).
    var backingFileSize: UInt32? = nil
    var fileLength = 4 * 512

    var clusterSize: Int { 1 << Int(clusterBits) }

    func bytes() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max(fileLength, clusterSize))
        func put32(_ offset: Int, _ value: UInt32) { for i in 0..<4 { out[offset + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(i))) } }
        func put64(_ offset: Int, _ value: UInt64) { for i in 0..<8 { out[offset + i] = UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64(i))) } }
        put32(0, Qcow2Header.magic)
        put32(4, version)
        put32(20, clusterBits)
        put64(24, size)
        put32(32, cryptMethod)
        put32(36, l1Size)
        put64(40, l1Offset)
        put64(48, refcountTableOffset)
        put32(56, refcountTableClusters)
        put32(60, snapshotCount)
        put64(64, snapshotsOffset)
        var position = 72
        if version == 3 {
            put64(72, incompatible)
            put64(80, compatible)
            put64(88, autoclear)
            put32(96, refcountOrder)
            put32(100, headerLength)
            if headerLength > 104 { out[104] = compressionType }
            position = Int(headerLength)
        }
        for ext in extensions {
            put32(position, ext.type)
            put32(position + 4, UInt32(ext.data.count))
            for (i, b) in ext.data.enumerated() { out[position + 8 + i] = b }
            position += 8 + (ext.data.count + 7) / 8 * 8
        }
        position += 8  // end marker (zeroes)
        if let name = backingFile {
            put64(8, UInt64(position))
            put32(16, backingFileSize ?? UInt32(name.count))
            for (i, b) in name.enumerated() where position + i < out.count { out[position + i] = b }
        }
        return Array(out.prefix(fileLength))
    }

    func header() throws(Qcow2FormatError) -> Qcow2Header {
        try Qcow2Header.parse(bytes())
    }

    func layout() throws(Qcow2FormatError) -> Qcow2Layout {
        try Qcow2Layout.validate(try header(), fileLength: UInt64(fileLength))
    }

    static func featureName(type: UInt8, bit: UInt8, _ name: String) -> [UInt8] {
        var entry = [type, bit] + Array(name.utf8)
        entry += [UInt8](repeating: 0, count: 48 - entry.count)
        return entry
    }
}
