#if canImport(Glibc)
import Glibc
#endif

/// Dirty logging of what the device wrote through host spans of guest memory.
extension GuestMemory {
    /// Marks in `log` the guest pages behind `spans` (host spans this table produced, e.g. a
    /// walked chain's writable buffers). Each span lies in one region (`translateSpans` cuts
    /// at region ends), so it is translated back by one scan over the regions, largest (main
    /// RAM) first: nothing per request has to keep guest-physical addresses, and a data path
    /// that is not logging pays nothing for this. Returns the pages not marked: beyond the
    /// log, or (never for spans of this table) outside guest memory.
    @inlinable
    public func markDirty(spans: UnsafeMutableBufferPointer<iovec>, in log: DirtyLogBitmap) -> UInt64 {
        var missed: UInt64 = 0
        for span in spans where span.iov_len > 0 {
            guard let base = span.iov_base, let gpa = guestPhysical(host: UnsafeRawPointer(base), length: span.iov_len) else {
                missed += 1
                continue
            }
            missed += log.mark(gpa: gpa, length: UInt64(span.iov_len))
        }
        return missed
    }

    /// The guest-physical address of `length` host bytes at `pointer`, if they lie in one region.
    @inlinable
    func guestPhysical(host pointer: UnsafeRawPointer, length: Int) -> UInt64? {
        let p = UInt(bitPattern: pointer)
        var i = 0
        while i < entryCount {
            let entry = entries[i]
            let base = UInt(bitPattern: entry.host)
            if p >= base {
                let offset = UInt64(p - base)
                let regionSize = entry.gpaEnd - entry.gpaStart
                if offset < regionSize && UInt64(length) <= regionSize - offset {
                    return entry.gpaStart + offset
                }
            }
            i += 1
        }
        return nil
    }
}
