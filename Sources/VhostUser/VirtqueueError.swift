/// A guest-side violation found while reading a virtqueue. Any of these means the driver broke
/// the virtio spec (or is hostile): the device should stop processing the queue and be
/// marked broken. Payloads are plain integers so creating one never allocates.
public enum VirtqueueError: Error, Sendable, Equatable, CustomStringConvertible {
    /// avail.idx moved more than the queue size past the last index the device consumed.
    case availableIndexJump(lastAvailable: UInt16, available: UInt16, queueSize: UInt16)
    /// A head index read from the available ring is not a descriptor index.
    case headOutOfRange(head: UInt16, queueSize: UInt16)
    /// A descriptor's `next` is outside its table (the ring or an indirect table).
    case nextOutOfRange(next: UInt16, tableSize: UInt32)
    /// The chain visits more descriptors than its table holds: a loop or a bogus chain.
    case chainTooLong(tableSize: UInt32)
    /// A device-readable descriptor follows a device-writable one.
    case readableAfterWritable
    /// A buffer's address + length wraps past 2^64.
    case bufferAddressWraps(address: UInt64, length: UInt32)
    /// Some byte of a buffer is outside every guest memory region.
    case bufferNotMapped(address: UInt64, length: UInt32)
    /// The chain's bytes add up to more than UInt32.max.
    case totalLengthOverflow
    /// The chain needs more host spans than the chain buffer holds.
    case tooManySpans(capacity: Int)
    /// VIRTQ_DESC_F_INDIRECT used without VIRTIO_F_RING_INDIRECT_DESC negotiated.
    case indirectNotNegotiated
    /// An indirect descriptor inside an indirect table.
    case nestedIndirect
    /// VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT.
    case indirectWithNext
    /// Indirect table length zero, not a multiple of 16, or over the supported maximum.
    case invalidIndirectTableLength(UInt32)
    /// The indirect table is not inside one guest memory region.
    case indirectTableNotMapped(address: UInt64, length: UInt32)
    /// Packed ring: a buffer id at or above the queue size.
    case bufferIdOutOfRange(id: UInt16, queueSize: UInt16)
    /// Packed ring: a buffer id made available again while the device still holds it.
    case bufferIdInUse(id: UInt16)
    /// Packed ring: the descriptor at the device's position has AVAIL and USED both equal to
    /// the driver's wrap counter, which only a device-written used descriptor may have.
    case availableFlagWithoutBuffer(position: UInt16, flags: UInt16)
    /// Packed ring: an indirect descriptor inside a chain of ring descriptors.
    case indirectInChain
    /// Packed ring: the driver made more descriptors available than the ring has entries
    /// while earlier ones were still in flight (the inflight region cannot hold them).
    case descriptorsInFlightExceedRing(queueSize: UInt16)

    public var description: String {
        switch self {
        case .availableIndexJump(let last, let avail, let size):
            return "virtqueue: avail.idx \(avail) is more than the queue size \(size) ahead of last seen \(last)"
        case .headOutOfRange(let head, let size):
            return "virtqueue: available ring names descriptor \(head), queue size is \(size)"
        case .nextOutOfRange(let next, let table):
            return "virtqueue: descriptor next \(next) is outside its table of \(table)"
        case .chainTooLong(let table):
            return "virtqueue: descriptor chain longer than its table of \(table) (loop?)"
        case .readableAfterWritable:
            return "virtqueue: device-readable descriptor after a device-writable one"
        case .bufferAddressWraps(let address, let length):
            return "virtqueue: buffer 0x\(String(address, radix: 16)) + \(length) wraps the address space"
        case .bufferNotMapped(let address, let length):
            return "virtqueue: buffer 0x\(String(address, radix: 16)) + \(length) is outside guest memory"
        case .totalLengthOverflow:
            return "virtqueue: descriptor chain is longer than 4 GiB"
        case .tooManySpans(let capacity):
            return "virtqueue: descriptor chain needs more than \(capacity) memory spans"
        case .indirectNotNegotiated:
            return "virtqueue: indirect descriptor without VIRTIO_F_RING_INDIRECT_DESC"
        case .nestedIndirect:
            return "virtqueue: indirect descriptor inside an indirect table"
        case .indirectWithNext:
            return "virtqueue: descriptor has both INDIRECT and NEXT flags"
        case .invalidIndirectTableLength(let length):
            return "virtqueue: invalid indirect table length \(length)"
        case .indirectTableNotMapped(let address, let length):
            return "virtqueue: indirect table 0x\(String(address, radix: 16)) + \(length) is not in one guest memory region"
        case .bufferIdOutOfRange(let id, let size):
            return "packed virtqueue: buffer id \(id) is not below the queue size \(size)"
        case .bufferIdInUse(let id):
            return "packed virtqueue: buffer id \(id) made available again while still in flight"
        case .availableFlagWithoutBuffer(let position, let flags):
            return "packed virtqueue: descriptor \(position) has flags 0x\(String(flags, radix: 16)): AVAIL flipped without an available descriptor (wrap counter confusion)"
        case .indirectInChain:
            return "packed virtqueue: indirect descriptor inside a descriptor chain"
        case .descriptorsInFlightExceedRing(let size):
            return "packed virtqueue: more than \(size) descriptors in flight (the driver reused ring entries the device had not used yet)"
        }
    }
}

/// Why a virtqueue's rings could not be set up (SET_VRING_NUM / SET_VRING_ADDR values).
public enum VirtqueueSetupError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Part: String, Sendable {
        case descriptorTable = "descriptor table"
        case availableRing = "available ring"
        case usedRing = "used ring"
        case descriptorRing = "descriptor ring"
        case driverArea = "driver area"
        case deviceArea = "device area"
    }

    /// Not a power of two in 1...32768.
    case invalidSize(UInt32)
    /// Not inside one region of guest memory.
    case notMapped(Part, userAddress: UInt64, length: UInt64)
    /// Not aligned as the spec requires (16, 2 and 4 bytes).
    case misaligned(Part, userAddress: UInt64, alignment: Int)
    /// Packed ring: not in 1...32768.
    case invalidPackedSize(UInt32)
    /// Packed ring: SET_VRING_BASE names a position outside the ring.
    case invalidPackedBase(UInt32, size: UInt32)

    public var description: String {
        switch self {
        case .invalidSize(let size):
            return "virtqueue size \(size) is not a power of two between 1 and 32768"
        case .notMapped(let part, let address, let length):
            return "virtqueue \(part.rawValue) at user address 0x\(String(address, radix: 16)) (\(length) bytes) is not inside one guest memory region"
        case .misaligned(let part, let address, let alignment):
            return "virtqueue \(part.rawValue) at user address 0x\(String(address, radix: 16)) is not \(alignment)-byte aligned"
        case .invalidPackedSize(let size):
            return "packed virtqueue size \(size) is not between 1 and 32768"
        case .invalidPackedBase(let base, let size):
            return "packed virtqueue base 0x\(String(base, radix: 16)) names a position outside the ring of \(size)"
        }
    }
}
