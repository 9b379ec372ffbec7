import CSpindle

/// A split virtqueue (virtio 1.x §2.7) living in guest memory, seen from the device side.
///
/// Set up from SET_VRING_NUM / SET_VRING_ADDR / SET_VRING_BASE values; every ring pointer is
/// validated once here so the hot path only checks what the guest can change afterwards
/// (indices, descriptors). Owned by one thread at a time (the queue's IOThread): it is a
/// plain value with no locks. It keeps its `GuestMemory` alive, so the rings stay mapped.
///
/// A `VirtqueueError` from any operation means the driver broke the protocol; stop using
/// the queue (`markBroken()`; `popAvailable()` then reports no more work).
public struct SplitVirtqueue: @unchecked Sendable {
    /// Ring addresses as SET_VRING_ADDR gives them: frontend user addresses.
    public struct RingAddresses: Sendable, Hashable {
        public var descriptorTable: UInt64
        public var availableRing: UInt64
        public var usedRing: UInt64
        public init(descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64) {
            self.descriptorTable = descriptorTable
            self.availableRing = availableRing
            self.usedRing = usedRing
        }
    }

    public let memory: GuestMemory
    public let size: UInt16
    public let features: VirtqueueFeatures
    @usableFromInline let mask: UInt16
    @usableFromInline let descriptors: UnsafeMutableRawPointer
    @usableFromInline let available: UnsafeMutableRawPointer
    @usableFromInline let used: UnsafeMutableRawPointer

    /// Next available-ring slot the device will consume (GET/SET_VRING_BASE).
    public var lastAvailableIndex: UInt16 {
        get { lastAvail }
        set { lastAvail = newValue; availShadow = newValue; signalledValid = false }
    }
    @usableFromInline var lastAvail: UInt16
    /// The latest avail.idx read (acquire); entries before it are known to be visible.
    @usableFromInline var availShadow: UInt16
    /// Next used-ring slot to fill; published to used.idx by `publishUsed()`.
    public var usedIndex: UInt16 { nextUsed }
    @usableFromInline var nextUsed: UInt16
    @usableFromInline var publishedUsed: UInt16
    /// used.idx up to which the dirty log has the used ring's elements (`logPublishedUsed`).
    @usableFromInline var loggedUsed: UInt16
    @usableFromInline var usedFlags: UInt16 = 0
    /// used.idx when the guest was last considered for an interrupt (EVENT_IDX logic).
    @usableFromInline var signalledUsed: UInt16 = 0
    @usableFromInline var signalledValid = false
    /// Heads popped but not yet returned in the used ring.
    public var inFlight: Int { popped }
    @usableFromInline var popped = 0
    public var isBroken: Bool { broken }
    @usableFromInline var broken = false

    /// Validates and maps the rings. `size` is SET_VRING_NUM's value (a power of two up to
    /// 32768); ring addresses must each lie in one region and be aligned per the spec.
    /// `usedIndex` starts at the value found in the used ring (it survives reconnects).
    public init(memory: GuestMemory, size: UInt32, addresses: RingAddresses,
                features: VirtqueueFeatures, lastAvailableIndex: UInt16 = 0) throws(VirtqueueSetupError) {
        guard VirtqueueLayout.isValidSize(size) else { throw .invalidSize(size) }
        let n = Int(size)
        descriptors = try Self.mapRing(memory, .descriptorTable, addresses.descriptorTable,
                                       VirtqueueLayout.descriptorTableBytes(size: n), VirtqueueLayout.descriptorAlignment)
        available = try Self.mapRing(memory, .availableRing, addresses.availableRing,
                                     VirtqueueLayout.availableRingBytes(size: n), VirtqueueLayout.availableAlignment)
        used = try Self.mapRing(memory, .usedRing, addresses.usedRing,
                                VirtqueueLayout.usedRingBytes(size: n), VirtqueueLayout.usedAlignment)
        self.memory = memory
        self.size = UInt16(n)
        self.mask = UInt16(n - 1)
        self.features = features
        lastAvail = lastAvailableIndex
        availShadow = lastAvailableIndex
        let current = UInt16(littleEndian: spindle_load_relaxed_u16(used + 2))
        nextUsed = current
        publishedUsed = current
        loggedUsed = current
    }

    private static func mapRing(_ memory: GuestMemory, _ part: VirtqueueSetupError.Part, _ uva: UInt64,
                                _ length: Int, _ alignment: Int) throws(VirtqueueSetupError) -> UnsafeMutableRawPointer {
        // Both the frontend's address and our host pointer must be aligned: atomics need the latter.
        guard uva % UInt64(alignment) == 0 else { throw .misaligned(part, userAddress: uva, alignment: alignment) }
        guard let pointer = memory.translateUserAddress(uva, length: UInt64(length)) else {
            throw .notMapped(part, userAddress: uva, length: UInt64(length))
        }
        guard Int(bitPattern: pointer) % alignment == 0 else {
            throw .misaligned(part, userAddress: uva, alignment: alignment)
        }
        return pointer
    }

    /// Stops handing out work after a guest error.
    public mutating func markBroken() { broken = true }

    /// Where the descriptor table is mapped here (to find the NUMA node of the ring's memory).
    public var descriptorTableAddress: UnsafeRawPointer { UnsafeRawPointer(descriptors) }

    // MARK: - Available ring

    /// Reads avail.idx (acquire) and checks it is plausible.
    @inlinable
    mutating func refreshAvailable() throws(VirtqueueError) {
        let index = UInt16(littleEndian: spindle_load_acquire_u16(available + 2))
        // Unsigned u16 distance: more than `size` pending entries cannot be legitimate.
        guard index &- lastAvail <= size else {
            broken = true
            throw .availableIndexJump(lastAvailable: lastAvail, available: index, queueSize: size)
        }
        availShadow = index
    }

    /// How many heads the driver has made available and the device not yet popped.
    @inlinable
    public mutating func availableCount() throws(VirtqueueError) -> UInt16 {
        if broken { return 0 }
        try refreshAvailable()
        return availShadow &- lastAvail
    }

    /// The next available head, or nil if there is none (or the queue is broken).
    @inlinable
    public mutating func popAvailable() throws(VirtqueueError) -> UInt16? {
        if broken { return nil }
        if availShadow == lastAvail {
            try refreshAvailable()
            if availShadow == lastAvail { return nil }
        }
        let slot = Int(lastAvail & mask)
        let head = UInt16(littleEndian: available.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self))
        guard head < size else {
            broken = true
            throw .headOutOfRange(head: head, queueSize: size)
        }
        lastAvail &+= 1
        popped += 1
        return head
    }

    // MARK: - Used ring

    /// Writes a used element; invisible to the driver until `publishUsed()`.
    @inlinable
    public mutating func addUsed(head: UInt16, writtenLength: UInt32) {
        let element = used + 4 + 8 * Int(nextUsed & mask)
        element.storeBytes(of: UInt32(head).littleEndian, as: UInt32.self)
        element.storeBytes(of: writtenLength.littleEndian, toByteOffset: 4, as: UInt32.self)
        nextUsed &+= 1
        if popped > 0 { popped -= 1 }
    }

    /// Publishes every element added so far by storing used.idx with release ordering.
    @inlinable
    public mutating func publishUsed() {
        guard publishedUsed != nextUsed else { return }
        spindle_store_release_u16(used + 2, nextUsed.littleEndian)
        publishedUsed = nextUsed
    }

    /// `addUsed` + `publishUsed` for one element.
    @inlinable
    public mutating func pushUsed(head: UInt16, writtenLength: UInt32) {
        addUsed(head: head, writtenLength: writtenLength)
        publishUsed()
    }
}
