import Glibc

/// A qcow2 request's pieces and scratch, kept in the request slot's bounce buffer (grown
/// once, then kept): first the iovecs of the piece in flight (one more than the request
/// has), then the L2 table the request last read (the chain's largest cluster), then,
/// for compressed clusters, the compressed bytes, the inflated cluster and zlib's arena.
enum Qcow2Pieces {
    /// Bytes of the iovec area for a request (64-byte aligned so the table region is too).
    @inline(__always)
    static func iovecBytes(_ request: UnsafeMutablePointer<BlockRequest>) -> Int {
        ((Int(request.pointee.iovcnt) + 1) * MemoryLayout<iovec>.stride + 63) & ~63
    }

    /// Makes the scratch hold the iovec area plus `extra` bytes. Growing it drops what it
    /// held, so the request then no longer holds an L2 table.
    static func reserveScratch(_ request: UnsafeMutablePointer<BlockRequest>, extra: Int) -> Bool {
        let bytes = iovecBytes(request) + extra
        if request.pointee.bounceCapacity >= bytes && request.pointee.bounce != nil { return true }
        request.pointee.formatTableDepth = 0xff
        return request.pointee.reserveBounce(bytes: bytes, alignment: 64)
    }

    /// The L2 table region (valid after `reserveScratch` with a table's worth of extra).
    @inline(__always)
    static func table(_ request: UnsafeMutablePointer<BlockRequest>) -> UnsafeMutableRawPointer {
        request.pointee.bounce! + iovecBytes(request)
    }

    /// The iovecs covering request bytes from..<from+count, written to the scratch.
    static func slice(_ request: UnsafeMutablePointer<BlockRequest>, from: UInt64, count: UInt64)
        -> (iov: UnsafeMutablePointer<iovec>, count: Int) {
        let out = request.pointee.bounce!.assumingMemoryBound(to: iovec.self)
        var produced = 0
        forEachSpan(request, from: from, count: count) { base, length in
            out[produced] = iovec(iov_base: base, iov_len: length)
            produced += 1
        }
        return (out, produced)
    }

    /// Zeroes request bytes from..<from+count.
    static func fill(_ request: UnsafeMutablePointer<BlockRequest>, from: UInt64, count: UInt64) {
        forEachSpan(request, from: from, count: count) { base, length in memset(base, 0, length) }
    }

    /// Copies `count` bytes from `source` into request bytes from `to` on.
    static func copy(_ request: UnsafeMutablePointer<BlockRequest>, from source: UnsafeRawPointer, to: UInt64, count: UInt64) {
        var consumed = 0
        forEachSpan(request, from: to, count: count) { base, length in
            memcpy(base, source + consumed, length)
            consumed += length
        }
    }

    /// Calls `body` with each guest buffer span covering request bytes from..<from+count.
    @inline(__always)
    static func forEachSpan(_ request: UnsafeMutablePointer<BlockRequest>, from: UInt64, count: UInt64,
                            _ body: (UnsafeMutableRawPointer, Int) -> Void) {
        guard let iov = request.pointee.iov else { return }
        var skip = from
        var left = count
        for i in 0..<Int(request.pointee.iovcnt) where left > 0 {
            let length = UInt64(iov[i].iov_len)
            if skip >= length {
                skip -= length
                continue
            }
            let take = min(length - skip, left)
            if let base = iov[i].iov_base { body(base + Int(skip), Int(take)) }
            left -= take
            skip = 0
        }
    }
}
