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
    /// Most host spans this chain can hold now (its own storage's, or an attached one's).
    public private(set) var capacity: Int
    @usableFromInline private(set) var spans: UnsafeMutablePointer<iovec>
    /// As many spans again, for the device's own rearranged copy of the chain (virtio-blk
    /// writes its data spans here, without header and status), so that it needs no room of
    /// its own sized for the longest chain.
    public private(set) var deviceSpans: UnsafeMutablePointer<iovec>
    /// The chain's own storage: `2 * ownCapacity` spans (chain, then device copy).
    private let ownSpans: UnsafeMutablePointer<iovec>
    public let ownCapacity: Int
    /// Storage lent by someone else (a long chain's, from a pool), or nil.
    public private(set) var attachedStorage: UnsafeMutablePointer<iovec>?

    /// The head descriptor index (what goes into the used ring).
    public internal(set) var head: UInt16 = 0
    public internal(set) var readableSpanCount = 0
    public internal(set) var writableSpanCount = 0
    /// Total device-readable bytes (driver → device).
    public internal(set) var readableLength = 0
    /// Total device-writable bytes (device → driver).
    public internal(set) var writableLength = 0

    public static let defaultCapacity = 1024

    /// Spans of storage a chain of `capacity` spans needs (the chain's and the device's copy).
    @inlinable
    public static func storageSpans(capacity: Int) -> Int { 2 * capacity }

    public init(capacity: Int = DescriptorChain.defaultCapacity) {
        precondition(capacity > 0, "a descriptor chain needs room for at least one span")
        self.capacity = capacity
        ownCapacity = capacity
        ownSpans = .allocate(capacity: Self.storageSpans(capacity: capacity))
        ownSpans.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: Self.storageSpans(capacity: capacity))
        spans = ownSpans
        deviceSpans = ownSpans + capacity
    }

    deinit {
        ownSpans.deallocate()
    }

    /// Walks into `storage` (at least `storageSpans(capacity:)` spans, owned by the caller)
    /// from now on, until `detachStorage()`. The chain is emptied.
    public func attachStorage(_ storage: UnsafeMutablePointer<iovec>, capacity: Int) {
        precondition(capacity > 0 && attachedStorage == nil, "a descriptor chain holds one attached storage at a time")
        clear(head: head)
        attachedStorage = storage
        spans = storage
        deviceSpans = storage + capacity
        self.capacity = capacity
    }

    /// Goes back to the chain's own storage (emptied) and returns the attached one, if any.
    @discardableResult
    public func detachStorage() -> UnsafeMutablePointer<iovec>? {
        guard let storage = attachedStorage else { return nil }
        clear(head: head)
        attachedStorage = nil
        spans = ownSpans
        deviceSpans = ownSpans + ownCapacity
        capacity = ownCapacity
        return storage
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
