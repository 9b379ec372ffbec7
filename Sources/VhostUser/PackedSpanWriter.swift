#if canImport(Glibc)
import Glibc
#endif

/// Fills a `DescriptorChain`'s spans one guest buffer at a time: checks order (readable
/// before writable), overflow and mapping, and translates through guest memory. Holds only
/// raw pointers and integers, so building one costs no reference counting.
///
/// `append` is forced inline: the packed walk calls it once per descriptor, and as an
/// out-of-line call it cost ~170 instructions per request (callgrind, 3-descriptor chains).
/// Only the rare case, a buffer outside the largest region or past the span capacity, is a
/// call (`appendTranslated`).
struct PackedSpanWriter {
    let spans: UnsafeMutablePointer<iovec>
    let capacity: Int
    /// The largest guest memory region (normally all of RAM): the fast path.
    let mainStart: UInt64
    let mainEnd: UInt64
    let mainHost: UnsafeMutableRawPointer?
    var spanCount = 0
    var readableSpanCount = 0
    var readableLength: UInt64 = 0
    var writableLength: UInt64 = 0

    @inline(__always)
    init(chain: DescriptorChain, memory: GuestMemory) {
        spans = chain.spans
        capacity = chain.capacity
        if memory.entryCount > 0 {
            let main = memory.entries[0]
            mainStart = main.gpaStart
            mainEnd = main.gpaEnd
            mainHost = main.host
        } else {
            mainStart = 0
            mainEnd = 0
            mainHost = nil
        }
    }

    /// Adds one guest buffer; zero-length buffers are skipped.
    @inline(__always)
    mutating func append(address: UInt64, length: UInt32, writable: Bool, memory: GuestMemory) throws(VirtqueueError) {
        guard length > 0 else { return }
        guard !address.addingReportingOverflow(UInt64(length)).overflow else {
            throw .bufferAddressWraps(address: address, length: length)
        }
        if writable {
            writableLength += UInt64(length)
        } else {
            guard writableLength == 0 else { throw .readableAfterWritable }
            readableLength += UInt64(length)
        }
        // Each term is < 2^32 and checked as soon as it is added: no UInt64 overflow.
        guard readableLength + writableLength <= UInt64(UInt32.max) else { throw .totalLengthOverflow }
        if let host = mainHost, address >= mainStart, address &+ UInt64(length) <= mainEnd, spanCount < capacity {
            spans[spanCount] = iovec(iov_base: host + Int(address &- mainStart), iov_len: Int(length))
            spanCount += 1
            if !writable { readableSpanCount = spanCount }
            return
        }
        try appendTranslated(address: address, length: length, writable: writable, memory: memory)
    }

    /// A buffer outside the largest region (it may cross adjacent regions) or with the spans
    /// full: the general translation.
    @inline(never)
    mutating func appendTranslated(address: UInt64, length: UInt32, writable: Bool, memory: GuestMemory) throws(VirtqueueError) {
        guard let count = memory.translateSpans(gpa: address, length: UInt64(length),
                                                into: spans + spanCount, capacity: capacity - spanCount)
        else {
            if memory.contains(gpa: address, length: UInt64(length)) { throw .tooManySpans(capacity: capacity) }
            throw .bufferNotMapped(address: address, length: length)
        }
        spanCount += count
        if !writable { readableSpanCount = spanCount }
    }

    /// Stores the result in the chain (which `clear(head:)` emptied before the walk).
    @inline(__always)
    func finish(_ chain: DescriptorChain, head: UInt16) {
        chain.head = head
        chain.readableSpanCount = readableSpanCount
        chain.writableSpanCount = spanCount - readableSpanCount
        chain.readableLength = Int(readableLength)
        chain.writableLength = Int(writableLength)
    }
}
