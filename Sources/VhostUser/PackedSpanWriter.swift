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
/// call (`translateOutsideMainRegion`), and that call does not take the writer: a writer
/// passed `inout` to any call lives on the stack, and the hot walk then loads and stores
/// every field per descriptor (~40 instructions per request,
/// bench/results/2026-12-06-packed-cost.md).
struct PackedSpanWriter {
    let spans: UnsafeMutablePointer<iovec>
    let spansEnd: UnsafeMutablePointer<iovec>
    /// The largest guest memory region (normally all of RAM): the fast path. Without any
    /// region, start > end, so no buffer is ever inside it.
    let mainStart: UInt64
    let mainEnd: UInt64
    /// The region's host address minus its guest address: a buffer's host address is this
    /// plus its guest address (wrapping arithmetic, one add).
    let mainHostBias: Int
    /// The next span to write, and the end of the readable ones (pointers, not counts: one
    /// compare and one add per descriptor).
    var next: UnsafeMutablePointer<iovec>
    var readableEnd: UnsafeMutablePointer<iovec>
    /// Readable + writable bytes (the readable ones are the difference).
    var totalLength: UInt64 = 0
    var writableLength: UInt64 = 0

    @inline(__always)
    init(chain: DescriptorChain, memory: GuestMemory) {
        spans = chain.spans
        spansEnd = chain.spans + chain.capacity
        next = chain.spans
        readableEnd = chain.spans
        if memory.entryCount > 0 {
            let main = memory.entries[0]
            mainStart = main.gpaStart
            mainEnd = main.gpaEnd
            mainHostBias = Int(bitPattern: main.host) &- Int(truncatingIfNeeded: main.gpaStart)
        } else {
            mainStart = .max
            mainEnd = 0
            mainHostBias = 0
        }
    }

    /// Adds one guest buffer; zero-length buffers are skipped.
    @inline(__always)
    mutating func append(address: UInt64, length: UInt32, writable: Bool, memory: GuestMemory) throws(VirtqueueError) {
        guard length > 0 else { return }
        let end = address.addingReportingOverflow(UInt64(length))
        guard !end.overflow else { throw .bufferAddressWraps(address: address, length: length) }
        if writable {
            writableLength += UInt64(length)
        } else {
            guard writableLength == 0 else { throw .readableAfterWritable }
        }
        // Each length is < 2^32 and the total is checked as soon as it grows: no UInt64 overflow.
        totalLength += UInt64(length)
        guard totalLength <= UInt64(UInt32.max) else { throw .totalLengthOverflow }
        if address >= mainStart, end.partialValue <= mainEnd, next < spansEnd {
            next.initialize(to: iovec(iov_base: UnsafeMutableRawPointer(bitPattern: mainHostBias &+ Int(truncatingIfNeeded: address)),
                                      iov_len: Int(length)))
            next += 1
        } else {
            next += try Self.translateOutsideMainRegion(address: address, length: length, memory: memory,
                                                        spans: spans, used: next - spans, capacity: spansEnd - spans)
        }
        if !writable { readableEnd = next }
    }

    /// A buffer outside the largest region (it may cross adjacent regions) or with the spans
    /// full: the general translation, after the `used` spans of `capacity`. Returns the spans
    /// it wrote.
    @inline(never)
    static func translateOutsideMainRegion(address: UInt64, length: UInt32, memory: GuestMemory,
                                           spans: UnsafeMutablePointer<iovec>, used: Int, capacity: Int) throws(VirtqueueError) -> Int {
        guard let count = memory.translateSpans(gpa: address, length: UInt64(length),
                                                into: spans + used, capacity: capacity - used) else {
            if memory.contains(gpa: address, length: UInt64(length)) { throw .tooManySpans(capacity: capacity) }
            throw .bufferNotMapped(address: address, length: length)
        }
        return count
    }

    /// Stores the result in the chain (which `clear(head:)` emptied before the walk).
    @inline(__always)
    func finish(_ chain: DescriptorChain, head: UInt16) {
        chain.head = head
        chain.readableSpanCount = readableEnd - spans
        chain.writableSpanCount = next - readableEnd
        chain.readableLength = Int(totalLength - writableLength)
        chain.writableLength = Int(writableLength)
    }
}
