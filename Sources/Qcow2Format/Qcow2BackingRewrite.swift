/// The header area an image gets when its backing file changes (after a commit the image
/// above the removed layers names the base). Everything but the backing file name, its
/// offset and size and the backing format extension stays as it was: the header fields
/// byte for byte, and every other extension (unknown ones included) in its order. As
/// QEMU's qcow2_update_header: extensions, then the end marker, then the name, all inside
/// the first cluster.
public enum Qcow2BackingRewrite {
    /// `first`: the image's first bytes as read (at least the header and extensions; at
    /// most the first cluster). Returns the bytes to write at offset 0 (header, extensions,
    /// end marker, name, zeroes to the end of what was read). nil `backingFile`
    /// drops the backing link; nil `backingFormat` drops the format extension.
    public static func rewrite(_ first: [UInt8], backingFile: String?, backingFormat: String?) throws(Qcow2FormatError) -> [UInt8] {
        let header = try Qcow2Header.parse(first)
        let name = Array((backingFile ?? "").utf8)
        guard name.count <= Int(Qcow2Header.maximumBackingFileNameLength), !name.contains(0) else {
            throw Qcow2FormatError(.unsupported, "backing file name '\(backingFile ?? "")' is longer than \(Qcow2Header.maximumBackingFileNameLength) bytes")
        }
        if backingFormat != nil && backingFile == nil {
            throw Qcow2FormatError(.unsupported, "Backing format cannot be used without backing file")
        }
        var extensions = header.extensions.filter { $0.type != Qcow2HeaderExtension.backingFormat }
        if let backingFormat {
            // Where QEMU puts it: first.
            extensions.insert(Qcow2HeaderExtension(type: Qcow2HeaderExtension.backingFormat, data: Array(backingFormat.utf8)), at: 0)
        }
        var area: [UInt8] = Array(first[0..<Int(header.headerLength)])
        for extensionEntry in extensions {
            append32(&area, extensionEntry.type)
            append32(&area, UInt32(extensionEntry.data.count))
            area += extensionEntry.data
            area += [UInt8](repeating: 0, count: (8 - extensionEntry.data.count % 8) % 8)
        }
        area += [UInt8](repeating: 0, count: 8)  // end marker
        let nameOffset = name.isEmpty ? 0 : UInt64(area.count)
        area += name
        guard UInt64(area.count) <= header.clusterSize else {
            throw Qcow2FormatError(.unsupported, "the header, its extensions and the backing file name (\(area.count) bytes) do not fit in the first cluster (\(header.clusterSize) bytes)")
        }
        // Zeroes over what the old extensions and name left behind (the cluster holds nothing else).
        area += [UInt8](repeating: 0, count: max(0, min(first.count, Int(header.clusterSize)) - area.count))
        put64(&area, at: 8, nameOffset)
        put32(&area, at: 16, UInt32(name.count))
        return area
    }

    private static func append32(_ bytes: inout [UInt8], _ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    private static func put32(_ bytes: inout [UInt8], at offset: Int, _ value: UInt32) {
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> UInt32(24 - 8 * index)) }
    }

    private static func put64(_ bytes: inout [UInt8], at offset: Int, _ value: UInt64) {
        for index in 0..<8 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> UInt64(56 - 8 * index)) }
    }
}
