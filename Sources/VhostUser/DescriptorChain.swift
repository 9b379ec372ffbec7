#if canImport(Glibc)
import Glibc
#endif

/// A walked descriptor chain as host memory spans, ready for readv/writev.
///
/// Allocated once (e.g. one per in-flight request slot) and refilled by
/// `SplitVirtqueue.walkChain(head:into:)`, so the data path never allocates. Spans are kept
/// in chain order: the device-readable ones first, then the device-writable ones. Not
/// thread-safe; owned by one thread at a time.
public final class DescriptorChain: @unchecked Sendable {
    /// Most host spans this chain can hold.
    public let capacity: Int
    @usableFromInline let spans: UnsafeMutablePointer<iovec>

    /// The head descriptor index (what goes into the used ring).
    public internal(set) var head: UInt16 = 0
    public internal(set) var readableSpanCount = 0
    public internal(set) var writableSpanCount = 0
    /// Total device-readable bytes (driver → device).
    public internal(set) var readableLength = 0
    /// Total device-writable bytes (device → driver).
    public internal(set) var writableLength = 0

    public static let defaultCapacity = 1024

    public init(capacity: Int = DescriptorChain.defaultCapacity) {
        precondition(capacity > 0, "a descriptor chain needs room for at least one span")
        self.capacity = capacity
        spans = .allocate(capacity: capacity)
        spans.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: capacity)
    }

    deinit {
        spans.deallocate()
    }

    /// The device-readable spans, in order.
    @inlinable
    public var readableSpans: UnsafeMutableBufferPointer<iovec> {
        UnsafeMutableBufferPointer(start: spans, count: readableSpanCount)
    }

    /// The device-writable spans, in order.
    @inlinable
    public var writableSpans: UnsafeMutableBufferPointer<iovec> {
        UnsafeMutableBufferPointer(start: spans + readableSpanCount, count: writableSpanCount)
    }

    /// Empties the chain (walkChain does this itself).
    public func clear(head: UInt16 = 0) {
        self.head = head
        readableSpanCount = 0
        writableSpanCount = 0
        readableLength = 0
        writableLength = 0
    }
}
