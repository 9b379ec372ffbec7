import CSpindle
import VhostUser

/// A packed virtqueue (virtio 1.1 "Packed Virtqueues") seen from the driver side: the
/// frontend writes descriptors into the one descriptor ring and the driver event
/// suppression area; the backend writes used descriptors back into the ring and the device
/// event suppression area.
///
/// A plain value over three pointers into shared memory, owned by one thread; no locks,
/// no allocation after setup. All fields little-endian (the host order here).
public struct PackedDriverVirtqueue: @unchecked Sendable {
    public let size: UInt16
    public let descriptors: UnsafeMutableRawPointer
    /// Driver event suppression (written here: when the backend should signal the call fd).
    public let driverArea: UnsafeMutableRawPointer
    /// Device event suppression (read here: whether the backend wants kicks).
    public let deviceArea: UnsafeMutableRawPointer
    /// VIRTIO_F_RING_EVENT_IDX negotiated: the DESC mode (off_wrap) may be used.
    public let eventIndex: Bool
    /// Buffer ids are 0..<idCount.
    public let idCount: Int
    /// Ring descriptors each id in flight took (0: not in flight). Driver-private memory.
    @usableFromInline let chainLengths: UnsafeMutablePointer<UInt16>
    /// Per id, `imageDescriptors` descriptor images for `appendImageChain` (see
    /// PackedDriverVirtqueue+Images.swift). Driver-private, 64-byte aligned.
    @usableFromInline let images: UnsafeMutableRawPointer
    /// The used descriptors the last count read (length | id << 32), for `popUsed`.
    @usableFromInline let usedBatch: UnsafeMutablePointer<UInt64>
    let privateStorage: PackedDriverMemory

    /// Where the next chain goes, and the driver's wrap counter there.
    public var availablePosition: UInt16 { availPosition }
    public var availableWrap: Bool { availWrap }
    /// Where the next used descriptor is expected, and the device's wrap counter there.
    public var usedPosition: UInt16 { nextUsedPosition }
    public var usedWrap: Bool { nextUsedWrap }
    @usableFromInline var availPosition: UInt16
    @usableFromInline var availWrap: Bool
    @usableFromInline var nextUsedPosition: UInt16
    @usableFromInline var nextUsedWrap: Bool
    /// The chain being written: its head's flags are stored last, by `finishChain`.
    @usableFromInline var chainHead: UInt16 = 0
    @usableFromInline var chainHeadFlags: UInt16 = 0
    @usableFromInline var chainCount: UInt16 = 0
    /// Ring slots made available since setup (wrapping), and as of the last `publish`.
    @usableFromInline var madeAvailable: UInt32 = 0
    @usableFromInline var publishedAvailable: UInt32 = 0
    /// `usedBatch` entries counted, and taken by `popUsed` so far.
    @usableFromInline var batchCount = 0
    @usableFromInline var batchTaken = 0

    /// `size` 1...32768 (any number); `descriptors` 16-, the areas 4-byte aligned, zeroed.
    /// `base` is where the ring starts (a fresh ring: `.initial`).
    public init(size: Int, descriptors: UnsafeMutableRawPointer, driverArea: UnsafeMutableRawPointer,
                deviceArea: UnsafeMutableRawPointer, eventIndex: Bool, idCount: Int, base: PackedVringBase = .initial) {
        precondition(size >= 1 && size <= PackedVirtqueueLayout.maximumSize && idCount >= 1 && idCount <= size)
        self.size = UInt16(truncatingIfNeeded: size)
        self.descriptors = descriptors
        self.driverArea = driverArea
        self.deviceArea = deviceArea
        self.eventIndex = eventIndex
        self.idCount = idCount
        privateStorage = PackedDriverMemory(idCount: idCount, imageBytes: Self.imageBytesPerID)
        chainLengths = privateStorage.chainLengths
        images = privateStorage.images
        usedBatch = privateStorage.usedBatch
        availPosition = base.availablePosition
        availWrap = base.availableWrap
        nextUsedPosition = base.usedPosition
        nextUsedWrap = base.usedWrap
    }

    /// GET_VRING_BASE's expected answer once everything made available was used.
    public var base: PackedVringBase {
        PackedVringBase(availablePosition: availPosition, availableWrap: availWrap,
                        usedPosition: nextUsedPosition, usedWrap: nextUsedWrap)
    }

    @inlinable @inline(__always)
    func entry(_ position: UInt16) -> UnsafeMutableRawPointer { descriptors + 16 * Int(position) }

    @inlinable @inline(__always)
    func advanced(_ position: UInt16, by count: UInt16, _ wrap: inout Bool) -> UInt16 {
        let next = UInt32(position) + UInt32(count)
        if next >= UInt32(size) { wrap.toggle(); return UInt16(truncatingIfNeeded: next - UInt32(size)) }
        return UInt16(truncatingIfNeeded: next)
    }

    // MARK: - Making buffers available

    /// Writes the next descriptor of the chain for buffer `id` (`flags`: NEXT, WRITE,
    /// INDIRECT; the AVAIL/USED bits are added here). The head's flags wait for `finishChain`.
    @inlinable
    public mutating func appendDescriptor(address: UInt64, length: UInt32, flags: UInt16, id: UInt16) {
        var wrap = availWrap
        let position = advanced(availPosition, by: chainCount, &wrap)
        let entry = entry(position)
        entry.storeBytes(of: address.littleEndian, as: UInt64.self)
        entry.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        let full = flags | PackedVirtqueueLayout.availableFlags(wrap: wrap)
        if chainCount == 0 {
            chainHead = position
            chainHeadFlags = full
        } else {
            entry.storeBytes(of: full.littleEndian, toByteOffset: 14, as: UInt16.self)
        }
        chainCount &+= 1
    }

    /// Makes the chain visible: the head's flags with a release store, after the rest.
    @inlinable
    public mutating func finishChain(id: UInt16) {
        chainLengths[Int(id)] = chainCount
        spindle_store_release_u16(entry(chainHead) + 14, chainHeadFlags.littleEndian)
        availPosition = advanced(availPosition, by: chainCount, &availWrap)
        madeAvailable &+= UInt32(chainCount)
        chainCount = 0
    }

    /// A virtio-blk request's direct chain for buffer `id` in one pass: header (16 bytes,
    /// readable), data (`dataLength` bytes with `dataFlags`, left out when 0), status (1 byte,
    /// writable); made available like `appendDescriptor`s + `finishChain` (the head's flags
    /// last, with a release store), without their per-descriptor position arithmetic.
    @inlinable
    public mutating func appendRequest(header: UInt64, data: UInt64, dataLength: UInt32, dataFlags: UInt16,
                                       status: UInt64, id: UInt16) {
        let next = VirtqueueLayout.descriptorFlagNext
        let head = availPosition
        let headWrap = availWrap
        var wrap = headWrap
        var position = head
        var entry = entry(head)
        entry.storeBytes(of: header.littleEndian, as: UInt64.self)
        entry.storeBytes(of: UInt32(16).littleEndian, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        var count: UInt16 = 2
        if dataLength > 0 {
            position = advanced(position, by: 1, &wrap)
            entry = self.entry(position)
            entry.storeBytes(of: data.littleEndian, as: UInt64.self)
            entry.storeBytes(of: dataLength.littleEndian, toByteOffset: 8, as: UInt32.self)
            entry.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
            let flags = next | dataFlags | PackedVirtqueueLayout.availableFlags(wrap: wrap)
            entry.storeBytes(of: flags.littleEndian, toByteOffset: 14, as: UInt16.self)
            count = 3
        }
        position = advanced(position, by: 1, &wrap)
        entry = self.entry(position)
        entry.storeBytes(of: status.littleEndian, as: UInt64.self)
        entry.storeBytes(of: UInt32(1).littleEndian, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        let statusFlags = VirtqueueLayout.descriptorFlagWrite | PackedVirtqueueLayout.availableFlags(wrap: wrap)
        entry.storeBytes(of: statusFlags.littleEndian, toByteOffset: 14, as: UInt16.self)
        chainLengths[Int(id)] = count
        spindle_store_release_u16(self.entry(head) + 14, (next | PackedVirtqueueLayout.availableFlags(wrap: headWrap)).littleEndian)
        availPosition = advanced(position, by: 1, &wrap)
        availWrap = wrap
        madeAvailable &+= UInt32(count)
    }

    /// Says whether the backend must be kicked for the chains made available since the last
    /// call: not when the device area says DISABLE; with DESC (EVENT_IDX) only if its
    /// off_wrap lies among those chains' slots; otherwise yes.
    @inlinable
    public mutating func publish() -> Bool {
        let advanced = madeAvailable &- publishedAvailable
        guard advanced != 0 else { return false }
        publishedAvailable = madeAvailable
        // Order the flag stores before reading the backend's suppression fields; pairs with
        // the backend's fence between writing them and re-reading the ring.
        spindle_fence_seq_cst()
        let flags = UInt16(littleEndian: spindle_load_relaxed_u16(deviceArea + 2)) & 3
        if flags == PackedVirtqueueLayout.eventFlagsDisable { return false }
        if flags == PackedVirtqueueLayout.eventFlagsDescriptor, eventIndex {
            let offWrap = UInt16(littleEndian: spindle_load_relaxed_u16(deviceArea))
            return Self.needsEvent(offWrap: offWrap, newPosition: availPosition, newWrap: availWrap,
                                   advanced: advanced, size: size)
        }
        return true
    }

    /// Whether an event asked for at `offWrap` (position, wrap counter in bit 15) lies in
    /// the `advanced` slots that end just before `newPosition` (lap `newWrap`). An event
    /// position in the other lap counts from one ring length earlier.
    @inlinable
    public static func needsEvent(offWrap: UInt16, newPosition: UInt16, newWrap: Bool, advanced: UInt32, size: UInt16) -> Bool {
        if advanced == 0 { return false }
        if advanced >= UInt32(size) { return true }
        var event = offWrap & ~PackedVirtqueueLayout.eventWrapBit
        if (offWrap & PackedVirtqueueLayout.eventWrapBit != 0) != newWrap { event &-= size }
        return newPosition &- event &- 1 < UInt16(truncatingIfNeeded: advanced)
    }

    // MARK: - Used descriptors

    /// Whether the descriptor at `position` was used in lap `wrap` (AVAIL and USED both equal
    /// to it); its other fields are readable after this acquire load.
    @inlinable @inline(__always)
    func isUsed(_ position: UInt16, wrap: Bool) -> Bool {
        let flags = UInt16(littleEndian: spindle_load_acquire_u16(entry(position) + 14))
        let bits = flags & (PackedVirtqueueLayout.descriptorFlagAvailable | PackedVirtqueueLayout.descriptorFlagUsed)
        return bits == PackedVirtqueueLayout.usedFlags(wrap: wrap)
    }

    /// Used descriptors waiting, or nil if one names an id that is not in flight (a broken
    /// backend). While a counted batch is not all taken, its rest; then walks the used
    /// descriptors ahead, reading each once: its length and id go to driver-private memory
    /// for `popUsed`, its id leaves flight (a second use of it is an error), and the id's
    /// ring slots are skipped. The count that ends a wait is the batch's.
    @inlinable
    public mutating func pendingUsedCount() -> Int? {
        if batchTaken < batchCount { return batchCount &- batchTaken }
        var position = nextUsedPosition
        var wrap = nextUsedWrap
        var count = 0
        while count < idCount, isUsed(position, wrap: wrap) {
            // Bytes 8..<16: length, id (the flags, already read, above them).
            let word = UInt64(littleEndian: entry(position).load(fromByteOffset: 8, as: UInt64.self))
            let id = Int(UInt16(truncatingIfNeeded: word &>> 32))
            guard id < idCount else { return nil }
            let slots = chainLengths[id]
            guard slots != 0 else { return nil }
            chainLengths[id] = 0
            usedBatch[count] = word
            position = advanced(position, by: slots, &wrap)
            count &+= 1
        }
        nextUsedPosition = position
        nextUsedWrap = wrap
        batchTaken = 0
        batchCount = count
        return count
    }

    /// Takes the next used descriptor that `pendingUsedCount()` counted (id `UInt32.max`, no
    /// buffer's, if it counted none).
    @inlinable
    public mutating func popUsed() -> (id: UInt32, length: UInt32) {
        guard batchTaken < batchCount else { return (UInt32.max, 0) }
        let word = usedBatch[batchTaken]
        batchTaken &+= 1
        return (UInt32(truncatingIfNeeded: word &>> 32) & 0xFFFF, UInt32(truncatingIfNeeded: word))
    }

    // MARK: - Interrupt (call) suppression

    /// Asks for a call on the next used descriptor (DESC at it with EVENT_IDX, else ENABLE),
    /// then re-checks: true if one is already there (do not sleep).
    @inlinable
    public func requestCallOnNextUsed() -> Bool {
        if eventIndex {
            spindle_store_relaxed_u16(driverArea, PackedVringBase.half(nextUsedPosition, nextUsedWrap).littleEndian)
            spindle_store_relaxed_u16(driverArea + 2, PackedVirtqueueLayout.eventFlagsDescriptor.littleEndian)
        } else {
            spindle_store_relaxed_u16(driverArea + 2, PackedVirtqueueLayout.eventFlagsEnable.littleEndian)
        }
        spindle_fence_seq_cst()
        return isUsed(nextUsedPosition, wrap: nextUsedWrap)
    }

    /// Asks the backend not to signal the call eventfd (polling mode).
    @inlinable
    public func suppressCalls() {
        spindle_store_relaxed_u16(driverArea + 2, PackedVirtqueueLayout.eventFlagsDisable.littleEndian)
    }
}

/// The driver-private memory (per-id chain lengths and descriptor images, the used batch),
/// freed with the last copy of the ring.
final class PackedDriverMemory: @unchecked Sendable {
    let chainLengths: UnsafeMutablePointer<UInt16>
    let images: UnsafeMutableRawPointer
    let imageBytes: Int
    let usedBatch: UnsafeMutablePointer<UInt64>
    init(idCount: Int, imageBytes: Int) {
        chainLengths = .allocate(capacity: idCount)
        chainLengths.initialize(repeating: 0, count: idCount)
        self.imageBytes = idCount * imageBytes
        images = .allocate(byteCount: self.imageBytes, alignment: 64)
        images.initializeMemory(as: UInt8.self, repeating: 0, count: self.imageBytes)
        usedBatch = .allocate(capacity: idCount)
        usedBatch.initialize(repeating: 0, count: idCount)
    }
    deinit {
        chainLengths.deallocate()
        images.deallocate()
        usedBatch.deallocate()
    }
}
