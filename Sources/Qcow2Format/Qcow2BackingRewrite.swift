/// A qcow2 header that names another backing file (or none), for the jobs that drop layers
/// of a chain (block-stream; block-commit needs the same for the image above the removed
/// layers). Only the backing file name, its offset and size, and the backing format
/// extension change: every other field and every other extension (unknown ones included)
/// is written back as it was, in its order.
public enum Qcow2BackingRewrite {
    /// The bytes to write at offset 0 of the image: the header cluster's used part with the
    /// new backing reference, zero-padded to cover what the old header used (so no trace of
    /// the old name stays). `current`: the header as it is on disk now (read it again just
    /// before: the allocation path updates refcount table fields). `backingFile` nil: no
    /// backing file (the backing format extension goes too).
    public static func headerBytes(_ current: Qcow2Header, backingFile: String?, backingFormat: String?) throws(Qcow2FormatError) -> [UInt8] {
        if let backingFile {
            guard !backingFile.isEmpty, backingFile.utf8.count <= Int(Qcow2Header.maximumBackingFileNameLength),
                  !backingFile.utf8.contains(0) else {
                throw Qcow2FormatError(.unsupported, "backing file name must be 1 to \(Qcow2Header.maximumBackingFileNameLength) bytes without NUL")
            }
        }
        var header = current
        let oldEnd = usedBytes(current)
        var extensions = current.extensions.filter { $0.type != Qcow2HeaderExtension.backingFormat }
        if backingFile != nil, let backingFormat {
            // Where qemu-img puts it: first, before the feature name table.
            extensions.insert(Qcow2HeaderExtension(type: Qcow2HeaderExtension.backingFormat, data: Array(backingFormat.utf8)), at: 0)
        }
        header.extensions = extensions
        header.backingFileName = backingFile
        header.backingFileOffset = 0
        header.backingFileSize = 0
        var bytes = try Qcow2ImageWriter.encode(&header)
        if bytes.count < oldEnd { bytes += [UInt8](repeating: 0, count: oldEnd - bytes.count) }
        return bytes
    }

    /// How many leading bytes of the header cluster `header` uses: fields, extensions with
    /// their end marker, the backing file name.
    public static func usedBytes(_ header: Qcow2Header) -> Int {
        var end = Int(header.headerLength)
        for ext in header.extensions { end += 8 + (ext.data.count + 7) & ~7 }
        end += 8
        if header.backingFileOffset != 0 { end = max(end, Int(header.backingFileOffset) + Int(header.backingFileSize)) }
        return min(end, Int(header.clusterSize))
    }
}
