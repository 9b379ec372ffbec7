import CSpindle

/// A packed virtqueue (virtio 1.1+ "Packed Virtqueues") living in guest memory, seen from the
/// device side: one descriptor ring the driver makes descriptors available in and the device
/// writes used descriptors back into, plus the two event suppression areas.
///
/// Set up from SET_VRING_NUM / SET_VRING_ADDR / SET_VRING_BASE values; every ring pointer is
/// validated once here, so the hot path only checks what the guest can change afterwards
/// (flags, ids, descriptors). A plain value owned by one thread at a time (the queue's
/// IOThread), no locks. It keeps its `GuestMemory` alive, so the ring stays mapped.
///
/// The "head" the `VirtqueueRing` protocol passes around is the driver's buffer id: what
/// goes back in the used descriptor. Each id in flight remembers where its descriptors start
/// and how many there are (the device skips that many ring slots when it writes the used
/// descriptor). A `VirtqueueError` means the driver broke the protocol; stop using the queue.
public struct PackedVirtqueue: @unchecked Sendable {
    /// Ring addresses as SET_VRING_ADDR gives them (frontend user addresses): descriptor ring
    /// in desc_user_addr, driver area in avail_user_addr, device area in used_user_addr.
    public struct RingAddresses: Sendable, Hashable {
        public var descriptorRing: UInt64
        public var driverArea: UInt64
        public var deviceArea: UInt64
        public init(descriptorRing: UInt64, driverArea: UInt64, deviceArea: UInt64) {
            self.descriptorRing = descriptorRing
            self.driverArea = driverArea
            self.deviceArea = deviceArea
        }
    }

    public let memory: GuestMemory
    public let size: UInt16
    public let features: VirtqueueFeatures
    @usableFromInline let descriptors: UnsafeMutableRawPointer
    @usableFromInline let driverArea: UnsafeMutableRawPointer
    @usableFromInline let deviceArea: UnsafeMutableRawPointer
    /// Guest-physical address of the descriptor ring: used descriptors are logged there.
    public let descriptorRingGuestAddress: UInt64
    /// Per buffer id: start position | descriptor count << 16, 0 while the id is not in flight.
    @usableFromInline let buffers: UnsafeMutablePointer<UInt32>
    /// Ids added to the used batch not yet published, for the inflight tracker (`size` at most).
    @usableFromInline let batchIDs: UnsafeMutablePointer<UInt16>
    @usableFromInline var batchIDCount = 0
    /// `size` once an inflight tracker uses the ring (`PackedInflightTracker.init`), else 0:
    /// without a tracker nobody reads the ids, and `addUsed` skips recording them.
    @usableFromInline var batchIDCapacity = 0
    let bufferTable: PackedBufferTable
    /// Chains a previous backend process left in flight, copied from the inflight region (their
    /// ring descriptors may have been overwritten by used descriptors since): walked from here.
    /// The walk uses the raw pointers (no reference counting); the object keeps them alive.
    var recovered: PackedRecoveredChains?
    var recoveredStart: UnsafeMutablePointer<UInt32>?
    var recoveredDescriptors: UnsafeRawPointer?

    /// Where the device looks for the next available descriptor, and the driver's wrap
    /// counter it expects there.
    @usableFromInline var availPosition: UInt16
    @usableFromInline var availWrap: Bool
    /// Where the next used descriptor goes, and the device's wrap counter as the AVAIL and
    /// USED bits of a used descriptor's flags (both set or both clear): toggled with the wrap,
    /// so that `addUsed` builds the flags without a branch or multiply.
    @usableFromInline var usedPosition: UInt16
    @usableFromInline var usedWrapFlags: UInt16
    @usableFromInline var usedWrap: Bool {
        get { usedWrapFlags != 0 }
        set { usedWrapFlags = PackedVirtqueueLayout.usedFlags(wrap: newValue) }
    }
    /// The batch being written: its first used descriptor's flags are stored last, by
    /// `publishUsed`, so the driver never sees a partial batch. The batch starts where the
    /// previous one was published (`publishedPosition`).
    @usableFromInline var batchFirstFlags: UInt16 = 0
    @usableFromInline var batchPending = false
    /// Ring slots given used descriptors since setup (wrapping); those of the batch are the
    /// ones past `publishedSlots`.
    @usableFromInline var usedSlots: UInt32 = 0
    /// Ring slots published since setup (wrapping); with the position/wrap after them.
    @usableFromInline var publishedSlots: UInt32 = 0
    @usableFromInline var publishedPosition: UInt16
    @usableFromInline var publishedWrap: Bool
    /// Slots the dirty log has (`logPublishedUsed`), and where they end.
    @usableFromInline var loggedSlots: UInt32 = 0
    @usableFromInline var loggedPosition: UInt16
    /// Slots published when the guest was last considered for an interrupt.
    @usableFromInline var signalledSlots: UInt32 = 0
    @usableFromInline var signalledValid = false
    /// The device area's flags as last written (to skip redundant stores).
    @usableFromInline var deviceEventFlags: UInt16 = .max
    /// Buffers taken and not yet used.
    public var inFlight: Int { popped }
    @usableFromInline var popped = 0
    public var isBroken: Bool { broken }
    @usableFromInline var broken = false

    /// Validates and maps the ring. `size` is SET_VRING_NUM's value (1...32768, any number);
    /// `base` is SET_VRING_BASE's value decoded (a fresh ring: `.initial`).
    public init(memory: GuestMemory, size: UInt32, addresses: RingAddresses, features: VirtqueueFeatures,
                base: PackedVringBase = .initial) throws(VirtqueueSetupError) {
        guard PackedVirtqueueLayout.isValidSize(size) else { throw .invalidPackedSize(size) }
        guard UInt32(base.availablePosition) < size, UInt32(base.usedPosition) < size else {
            throw .invalidPackedBase(base.encoded, size: size)
        }
        let n = Int(size)
        descriptors = try Self.map(memory, .descriptorRing, addresses.descriptorRing,
                                   PackedVirtqueueLayout.descriptorRingBytes(size: n), PackedVirtqueueLayout.descriptorAlignment)
        driverArea = try Self.map(memory, .driverArea, addresses.driverArea,
                                  PackedVirtqueueLayout.eventSuppressionBytes, PackedVirtqueueLayout.eventSuppressionAlignment)
        deviceArea = try Self.map(memory, .deviceArea, addresses.deviceArea,
                                  PackedVirtqueueLayout.eventSuppressionBytes, PackedVirtqueueLayout.eventSuppressionAlignment)
        guard let gpa = memory.guestPhysicalAddress(of: descriptors) else {
            throw .notMapped(.descriptorRing, userAddress: addresses.descriptorRing, length: UInt64(16 * n))
        }
        descriptorRingGuestAddress = gpa
        self.memory = memory
        self.size = UInt16(n)
        self.features = features
        bufferTable = PackedBufferTable(count: n)
        buffers = bufferTable.entries
        batchIDs = bufferTable.batchIDs
        availPosition = base.availablePosition
        availWrap = base.availableWrap
        usedPosition = base.usedPosition
        usedWrapFlags = PackedVirtqueueLayout.usedFlags(wrap: base.usedWrap)
        publishedPosition = base.usedPosition
        publishedWrap = base.usedWrap
        loggedPosition = base.usedPosition
    }

    private static func map(_ memory: GuestMemory, _ part: VirtqueueSetupError.Part, _ uva: UInt64,
                            _ length: Int, _ alignment: Int) throws(VirtqueueSetupError) -> UnsafeMutableRawPointer {
        guard uva % UInt64(alignment) == 0 else { throw .misaligned(part, userAddress: uva, alignment: alignment) }
        guard let pointer = memory.translateUserAddress(uva, length: UInt64(length)) else {
            throw .notMapped(part, userAddress: uva, length: UInt64(length))
        }
        guard Int(bitPattern: pointer) % alignment == 0 else {
            throw .misaligned(part, userAddress: uva, alignment: alignment)
        }
        return pointer
    }

    /// GET_VRING_BASE's answer (after the queue stopped: nothing in flight, all published).
    public var base: PackedVringBase {
        PackedVringBase(availablePosition: availPosition, availableWrap: availWrap,
                        usedPosition: publishedPosition, usedWrap: publishedWrap)
    }

    /// The avail half of `base` (position, wrap in bit 15).
    public var lastAvailableIndex: UInt16 { PackedVringBase.half(availPosition, availWrap) }

    public mutating func markBroken() { broken = true }

    /// Where the descriptor ring is mapped here (to find the NUMA node of the ring's memory).
    public var descriptorRingAddress: UnsafeRawPointer { UnsafeRawPointer(descriptors) }

    /// Moves a ring position on by one, turning the wrap counter at the end of the ring.
    @inlinable @inline(__always)
    func advanced(_ position: UInt16, _ wrap: inout Bool) -> UInt16 {
        let next = position &+ 1
        if next == size { wrap.toggle(); return 0 }
        return next
    }
}

/// The buffer id table's memory, freed with the last copy of the ring.
final class PackedBufferTable: @unchecked Sendable {
    let entries: UnsafeMutablePointer<UInt32>
    let batchIDs: UnsafeMutablePointer<UInt16>
    init(count: Int) {
        entries = .allocate(capacity: count)
        entries.initialize(repeating: 0, count: count)
        batchIDs = .allocate(capacity: count)
        batchIDs.initialize(repeating: 0, count: count)
    }
    deinit {
        entries.deallocate()
        batchIDs.deallocate()
    }
}
