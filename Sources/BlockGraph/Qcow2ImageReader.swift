import BlockCommon
import BlockIO
import Glibc
import Qcow2Format

/// Reads a qcow2 image's header and L1 table with plain pread, on the control thread at
/// open (never on an IOThread), and checks them: what Qcow2IO needs to serve it.
struct Qcow2ImageReader {
    let fd: Int32
    let fileLength: UInt64
    /// "qcow2 node 'd0'" (or the backing file's path): how errors name the image.
    let subject: String

    struct Image {
        var header: Qcow2Header
        var layout: Qcow2Layout
        var l2TableOffsets: [UInt64]
        /// L1 entries that are corrupt (their guest ranges fail with EIO when read).
        var corruptL1Entries: Int
    }

    func error(_ problem: String, errno code: Int32 = EINVAL) -> BlockError {
        BlockError(errno: code, "\(subject): \(problem)")
    }

    func read(readOnly: Bool) throws(BlockError) -> Image {
        // The whole first cluster (at most 2 MiB): the header and its extensions.
        let headerBytes = try pread(count: Int(min(fileLength, 1 << Qcow2Header.maximumClusterBits)), at: 0, what: "the header")
        let header: Qcow2Header
        let layout: Qcow2Layout
        do {
            header = try Qcow2Header.parse(headerBytes)
            try header.features.check(header: header, readOnly: readOnly)
            layout = try Qcow2Layout.validate(header, fileLength: fileLength)
        } catch {
            throw self.error(error.message, errno: error.kind == .unsupported ? ENOTSUP : EINVAL)
        }
        let l1Bytes = try pread(count: Int(layout.l1Bytes), at: layout.l1Offset, what: "the L1 table")
        var offsets = [UInt64](repeating: 0, count: Int(layout.l1Size))
        var corrupt = 0
        for index in 0..<offsets.count {
            var raw: UInt64 = 0
            for byte in 0..<8 { raw = raw << 8 | UInt64(l1Bytes[index * 8 + byte]) }
            guard let offset = Qcow2Entries.l2TableOffset(l1Entry: raw, clusterBits: layout.clusterBits),
                  offset == 0 || layout.checkL2Table(offset) == nil else {
                offsets[index] = Qcow2IO.corruptL1
                corrupt += 1
                continue
            }
            offsets[index] = offset
        }
        return Image(header: header, layout: layout, l2TableOffsets: offsets, corruptL1Entries: corrupt)
    }

    func pread(count: Int, at offset: UInt64, what: String) throws(BlockError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { buffer in
                Glibc.pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                let e = got < 0 ? errno : EIO
                throw error("cannot read \(what) (\(count) bytes at \(offset)): \(got < 0 ? String(cString: strerror(e)) : "end of file")", errno: e)
            }
            done += got
        }
        return bytes
    }
}
