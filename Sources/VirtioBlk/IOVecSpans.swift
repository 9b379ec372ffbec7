#if canImport(Glibc)
import Glibc
#endif

/// Byte-level access to a list of host spans (a descriptor chain's buffers), without
/// allocating: the request header and discard segments may straddle descriptors.
enum IOVecSpans {
    /// Copies `count` bytes starting `offset` bytes into `spans` to `destination`.
    /// Returns false if the spans hold fewer than `offset + count` bytes.
    static func gather(_ spans: UnsafeMutableBufferPointer<iovec>, offset: Int, count: Int,
                       into destination: UnsafeMutableRawPointer) -> Bool {
        var skip = offset
        var copied = 0
        for span in spans where copied < count {
            guard let base = span.iov_base else { continue }
            if skip >= span.iov_len {
                skip -= span.iov_len
                continue
            }
            let n = min(span.iov_len - skip, count - copied)
            (destination + copied).copyMemory(from: base + skip, byteCount: n)
            copied += n
            skip = 0
        }
        return copied == count
    }

    /// Copies up to `count` bytes from `source` into `spans` starting `offset` bytes in.
    /// Returns how many bytes were written.
    @discardableResult
    static func scatter(_ source: UnsafeRawBufferPointer, into spans: UnsafeMutableBufferPointer<iovec>, offset: Int = 0) -> Int {
        var skip = offset
        var written = 0
        guard let sourceBase = source.baseAddress else { return 0 }
        for span in spans where written < source.count {
            guard let base = span.iov_base else { continue }
            if skip >= span.iov_len {
                skip -= span.iov_len
                continue
            }
            let n = min(span.iov_len - skip, source.count - written)
            (base + skip).copyMemory(from: sourceBase + written, byteCount: n)
            written += n
            skip = 0
        }
        return written
    }

    /// Writes into `destination` the spans covering bytes [offset, offset + length) of
    /// `spans`, trimming the first and last. Returns the span count, or nil if `capacity`
    /// is too small or the spans are too short.
    static func slice(_ spans: UnsafeMutableBufferPointer<iovec>, offset: Int, length: Int,
                      into destination: UnsafeMutablePointer<iovec>, capacity: Int) -> Int? {
        var skip = offset
        var remaining = length
        var count = 0
        for span in spans where remaining > 0 {
            guard let base = span.iov_base else { continue }
            if skip >= span.iov_len {
                skip -= span.iov_len
                continue
            }
            guard count < capacity else { return nil }
            let n = min(span.iov_len - skip, remaining)
            destination[count] = iovec(iov_base: base + skip, iov_len: n)
            count += 1
            remaining -= n
            skip = 0
        }
        return remaining == 0 ? count : nil
    }
}
