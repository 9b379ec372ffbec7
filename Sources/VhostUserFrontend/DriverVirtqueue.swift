import CSpindle
import VhostUser

/// A split virtqueue (virtio 1.x §2.7) seen from the driver side: the frontend writes
/// descriptors and the avail ring, the backend fills the used ring.
///
/// A plain value over three pointers into shared memory, owned by one thread (the queue's
/// benchmark thread); no locks, no allocation. All ring fields are little-endian, which
/// is the host order on every platform Spindle runs on.
public struct DriverVirtqueue: @unchecked Sendable {
    public let size: UInt16
    @usableFromInline let mask: UInt16
    public let descriptors: UnsafeMutableRawPointer
    public let available: UnsafeMutableRawPointer
    public let used: UnsafeMutableRawPointer
    /// VIRTIO_F_RING_EVENT_IDX was negotiated: used_event / avail_event replace the flags.
    public let eventIndex: Bool

    /// Next avail-ring slot to fill; `publishAvailable()` makes entries up to it visible.
    public var availableIndex: UInt16 { nextAvail }
    /// avail.idx as last published.
    public var publishedAvailableIndex: UInt16 { publishedAvail }
    /// Next used-ring entry to harvest.
    public var lastUsedIndex: UInt16 { lastUsed }
    @usableFromInline var nextAvail: UInt16 = 0
    @usableFromInline var publishedAvail: UInt16 = 0
    @usableFromInline var lastUsed: UInt16 = 0

    /// `size` must be a power of two; the pointers must be zeroed ring memory laid out per
    /// `VirtqueueLayout` (descriptor table 16-, avail 2-, used 4-byte aligned).
    public init(size: Int, descriptors: UnsafeMutableRawPointer, available: UnsafeMutableRawPointer,
                used: UnsafeMutableRawPointer, eventIndex: Bool) {
        precondition(size >= 1 && size <= VirtqueueLayout.maximumSize && size & (size - 1) == 0)
        self.size = UInt16(truncatingIfNeeded: size)
        self.mask = UInt16(truncatingIfNeeded: size - 1)
        self.descriptors = descriptors
        self.available = available
        self.used = used
        self.eventIndex = eventIndex
    }

    // MARK: - Descriptors

    /// Writes descriptor `index` of the table at `table` (the ring's own or an indirect one).
    @inlinable
    public static func writeDescriptor(_ table: UnsafeMutableRawPointer, _ index: Int, address: UInt64,
                                       length: UInt32, flags: UInt16, next: UInt16) {
        let entry = table + index * VirtqueueLayout.descriptorSize
        entry.storeBytes(of: address.littleEndian, as: UInt64.self)
        entry.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        entry.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    /// Changes only the length and flags of a descriptor (the per-request part).
    @inlinable
    public static func updateDescriptor(_ table: UnsafeMutableRawPointer, _ index: Int, length: UInt32, flags: UInt16) {
        let entry = table + index * VirtqueueLayout.descriptorSize
        entry.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
    }

    // MARK: - Avail ring

    /// Puts a chain head in the next avail slot; the backend sees it after `publishAvailable()`.
    @inlinable
    public mutating func pushAvailable(head: UInt16) {
        let slot = Int(nextAvail & mask)
        (available + 4 + 2 * slot).storeBytes(of: head.littleEndian, as: UInt16.self)
        nextAvail &+= 1
    }

    /// Stores avail.idx with release ordering (the ring entries and descriptors written
    /// before become visible first) and says whether the backend must be kicked for the
    /// entries just published: with EVENT_IDX when avail_event lies in the new window,
    /// otherwise unless used.flags has NO_NOTIFY.
    @inlinable
    public mutating func publishAvailable() -> Bool {
        let old = publishedAvail
        let new = nextAvail
        guard old != new else { return false }
        spindle_store_release_u16(available + 2, new.littleEndian)
        publishedAvail = new
        // Order the avail.idx store before reading the backend's suppression fields;
        // pairs with the backend's fence between writing them and re-reading avail.idx.
        spindle_fence_seq_cst()
        if eventIndex {
            return Self.needsEvent(eventIndex: availableEvent, newIndex: new, oldIndex: old)
        }
        let flags = UInt16(littleEndian: spindle_load_relaxed_u16(used))
        return flags & VirtqueueLayout.usedFlagNoNotify == 0
    }

    /// The backend's avail_event (EVENT_IDX): it wants a kick once avail.idx passes this.
    @inlinable
    public var availableEvent: UInt16 {
        UInt16(littleEndian: spindle_load_relaxed_u16(used + 4 + 8 * Int(size)))
    }

    // MARK: - Used ring

    /// used.idx, loaded with acquire ordering: the entries before it are then readable.
    @inlinable
    public var backendUsedIndex: UInt16 {
        UInt16(littleEndian: spindle_load_acquire_u16(used + 2))
    }

    /// Used entries not yet harvested, or nil if the backend claims more than the ring
    /// holds (a broken backend).
    @inlinable
    public func pendingUsedCount() -> Int? {
        let count = backendUsedIndex &- lastUsedIndex
        return count <= size ? Int(count) : nil
    }

    /// Takes the next used entry. Only call after `pendingUsedCount()` said one is there.
    @inlinable
    public mutating func popUsed() -> (id: UInt32, length: UInt32) {
        let entry = used + 4 + 8 * Int(lastUsed & mask)
        lastUsed &+= 1
        return (UInt32(littleEndian: entry.load(as: UInt32.self)),
                UInt32(littleEndian: entry.load(fromByteOffset: 4, as: UInt32.self)))
    }

    // MARK: - Interrupt (call) suppression

    /// Asks for a call as soon as anything more is used, then re-checks: returns true if
    /// entries are already there (do not sleep; the backend may have skipped the call).
    @inlinable
    public func requestCallOnNextUsed() -> Bool {
        if eventIndex {
            spindle_store_relaxed_u16(available + 4 + 2 * Int(size), lastUsedIndex.littleEndian)
        } else {
            spindle_store_relaxed_u16(available, 0)
        }
        spindle_fence_seq_cst()
        return backendUsedIndex != lastUsedIndex
    }

    /// Asks the backend not to signal the call eventfd (polling mode). With EVENT_IDX the
    /// driver cannot switch calls off, only move used_event out of reach: one behind the
    /// entries already harvested, so it is hit only after the used index wraps.
    @inlinable
    public func suppressCalls() {
        if eventIndex {
            spindle_store_relaxed_u16(available + 4 + 2 * Int(size), (lastUsedIndex &- 1).littleEndian)
        } else {
            spindle_store_relaxed_u16(available, VirtqueueLayout.availableFlagNoInterrupt.littleEndian)
        }
    }

    /// virtio's vring_need_event: true if `eventIndex` is in [oldIndex, newIndex) in wrapping
    /// u16 arithmetic, i.e. the other side asked to be notified within this batch.
    @inlinable
    public static func needsEvent(eventIndex: UInt16, newIndex: UInt16, oldIndex: UInt16) -> Bool {
        (newIndex &- eventIndex &- 1) < (newIndex &- oldIndex)
    }
}
