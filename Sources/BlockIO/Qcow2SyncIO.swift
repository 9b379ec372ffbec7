import CQcow2Zlib
import Glibc
import Qcow2Format

/// Blocking file I/O for the qcow2 allocation path (never the fast path): whole transfers
/// or -errno, EINTR retried. Also what blockdev-create writes a new image's metadata with.
package enum Qcow2SyncIO {
    /// Reads up to `count` bytes; returns how many (short only at the end of the file) or -errno.
    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, at offset: UInt64) -> Int {
        var done = 0
        while done < count {
            let got = Glibc.pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if got < 0 && errno == EINTR { continue }
            if got < 0 { return -Int(errno) }
            if got == 0 { break }
            done += got
        }
        return done
    }

    /// Reads exactly `count` bytes, zero-filling what lies past the end of the file.
    static func readZeroFilled(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, at offset: UInt64) -> Int32 {
        let got = read(fd, buffer, count, at: offset)
        if got < 0 { return Int32(got) }
        if got < count { memset(buffer + got, 0, count - got) }
        return 0
    }

    package static func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, at offset: UInt64) -> Int32 {
        var done = 0
        while done < count {
            let put = Glibc.pwrite(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if put < 0 && errno == EINTR { continue }
            if put <= 0 { return put < 0 ? -errno : -EIO }
            done += put
        }
        return 0
    }

    /// Writes the iovecs whole (`total` bytes); a short write is retried from where it stopped.
    static func writev(_ fd: Int32, _ iov: UnsafeMutablePointer<iovec>, _ count: Int, total: Int, at offset: UInt64) -> Int32 {
        let put = Glibc.pwritev(fd, iov, Int32(count), off_t(offset))
        if put == total { return 0 }
        if put < 0 && errno != EINTR { return -errno }
        // Rare (EINTR, a nearly full disk): finish span by span.
        var skip = max(0, put)
        var position = offset + UInt64(max(0, put))
        for i in 0..<count {
            let length = iov[i].iov_len
            if skip >= length {
                skip -= length
                continue
            }
            let rc = write(fd, iov[i].iov_base! + skip, length - skip, at: position)
            if rc < 0 { return rc }
            position += UInt64(length - skip)
            skip = 0
        }
        return 0
    }

    package static func datasync(_ fd: Int32) -> Int32 {
        while fdatasync(fd) != 0 {
            if errno != EINTR { return -errno }
        }
        return 0
    }

    static func writeBigEndian(_ fd: Int32, _ value: UInt64, at offset: UInt64) -> Int32 {
        var raw = value.bigEndian
        return write(fd, &raw, 8, at: offset)
    }
}

extension Qcow2Backing {
    /// Reads guest bytes [position, position+count) of this backing layer with blocking
    /// reads (copy-on-write fill on the allocation path). `scratch`: two of the chain's
    /// clusters plus zlib's arena, for compressed clusters.
    func readSync(_ position: UInt64, count: Int, into buffer: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer) -> Int32 {
        switch self {
        case .none:
            memset(buffer, 0, count)
            return 0
        case .raw(let file):
            let size = file.length
            let inside = position >= size ? 0 : Int(min(UInt64(count), size - position))
            if inside < count { memset(buffer + inside, 0, count - inside) }
            return inside == 0 ? 0 : Qcow2SyncIO.readZeroFilled(file.fd, buffer, inside, at: position)
        case .qcow2(let layer):
            return layer.readSync(position, count: count, into: buffer, scratch: scratch)
        }
    }
}

extension Qcow2IO {
    /// This layer's guest bytes as they are now (and the layers below where unallocated),
    /// read with blocking reads from the file (the tables on disk are the truth: the
    /// allocation path holds the node's allocation lock while it looks).
    func readSync(_ position: UInt64, count: Int, into buffer: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer) -> Int32 {
        var done = 0
        while done < count {
            let at = position + UInt64(done)
            let left = count - done
            if at >= layout.virtualSize {
                memset(buffer + done, 0, left)
                return 0
            }
            let offsetInCluster = at & (layout.clusterSize - 1)
            let piece = Int(min(UInt64(left), layout.clusterSize - offsetInCluster, layout.virtualSize - at))
            let rc = readClusterSync(at, offsetInCluster: offsetInCluster, count: piece, into: buffer + done, scratch: scratch)
            if rc < 0 { return rc }
            done += piece
        }
        return 0
    }

    private func readClusterSync(_ at: UInt64, offsetInCluster: UInt64, count: Int, into target: UnsafeMutableRawPointer,
                                 scratch: UnsafeMutableRawPointer) -> Int32 {
        let l1Index = at >> (UInt64(layout.clusterBits) + UInt64(layout.l2Bits))
        let tableOffset = l2TableOffset(l1Index)
        if tableOffset == Self.corruptL1 { return -EIO }
        if tableOffset == 0 { return backing.readSync(at, count: count, into: target, scratch: scratch) }
        let index = (at >> UInt64(layout.clusterBits)) & ((1 << UInt64(layout.l2Bits)) - 1)
        var raw: UInt64 = 0
        guard Qcow2SyncIO.read(fd, &raw, 8, at: tableOffset + index * 8) == 8 else { return -EIO }
        switch layout.check(Qcow2Entries.decodeL2(UInt64(bigEndian: raw), clusterBits: layout.clusterBits)) {
        case .unallocated:
            return backing.readSync(at, count: count, into: target, scratch: scratch)
        case .zero:
            memset(target, 0, count)
            return 0
        case .data(let hostOffset, _):
            return Qcow2SyncIO.readZeroFilled(fd, target, count, at: hostOffset + offsetInCluster)
        case .compressed(let hostOffset, let byteCount):
            let clusterSize = Int(layout.clusterSize)
            let bytes = Int(min(byteCount, layout.clusterSize))
            let got = Qcow2SyncIO.read(fd, scratch, bytes, at: hostOffset)
            if got < 0 { return Int32(got) }
            let inflated = scratch + chainClusterSize
            guard spindle_qcow2_inflate(inflated, clusterSize, scratch, got, inflated + chainClusterSize,
                                        Int(SPINDLE_QCOW2_INFLATE_ARENA)) == 0 else { return -EIO }
            memcpy(target, inflated + Int(offsetInCluster), count)
            return 0
        case .corrupt:
            return -EIO
        }
    }
}
