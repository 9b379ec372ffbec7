import VhostUser

/// The packed-ring side of `BlkQueue`, and the calls that serve both layouts.
///
/// The buffer id is the slot number. `prepare` records the data length and direction in the
/// slot (driver-private bytes 20..<28 of its 128). `submit` then makes the chain available
/// at the ring's next position: a direct chain from the slot's descriptor images (header,
/// data, status; written at setup, the data descriptor's length and direction set here; see
/// PackedDriverVirtqueue+Images.swift), header and status alone for a request without data
/// (a flush); with indirect descriptors the slot's own table and one INDIRECT descriptor
/// naming it.
extension BlkQueue {
    @usableFromInline static let packedLengthOffset = 20
    @usableFromInline static let packedFlagsOffset = 24
    /// The data descriptor's place in a slot's image.
    @usableFromInline static let packedDataImage = 1

    /// Writes every slot's images: header (16 bytes, readable), data (length and direction
    /// set per request), status (1 byte, writable).
    mutating func writePackedImages(memory: SharedMemoryRegion) {
        let next = VirtqueueLayout.descriptorFlagNext
        for slot in 0..<slotCount {
            let id = UInt16(truncatingIfNeeded: slot)
            packedRing!.writeImage(id: id, index: 0, address: memory.guestPhysicalAddress(of: header(of: slot)), length: 16, flags: next)
            packedRing!.writeImage(id: id, index: Self.packedDataImage, address: memory.guestPhysicalAddress(of: data(of: slot)),
                                   length: UInt32(maxRequestBytes), flags: next)
            packedRing!.writeImage(id: id, index: 2, address: memory.guestPhysicalAddress(of: statusPointer(of: slot)),
                                   length: 1, flags: VirtqueueLayout.descriptorFlagWrite)
        }
    }

    @inlinable
    func preparePacked(slot: Int, deviceWritesData: Bool, byteCount: Int) {
        let base = slotBase(slot)
        base.storeBytes(of: UInt32(truncatingIfNeeded: byteCount), toByteOffset: Self.packedLengthOffset, as: UInt32.self)
        let flags = deviceWritesData ? VirtqueueLayout.descriptorFlagWrite : 0
        base.storeBytes(of: flags, toByteOffset: Self.packedFlagsOffset, as: UInt16.self)
    }

    // Mutating, so an out-of-line call passes the queue in place: a non-mutating out-of-line
    // call made the caller copy the whole `BlkQueue` (248 bytes, a memcpy per request).
    // Forcing it inline made `submit` an out-of-line call for split rings too (+26).
    @inlinable
    mutating func submitPacked(slot: Int) {
        if indirect { return submitPackedIndirect(slot: slot) }
        // The slot index is the caller's (< slotCount): no overflow check on its offset.
        let base = slots + slot &* QueueMemoryLayout.slotStride
        let length = base.load(fromByteOffset: Self.packedLengthOffset, as: UInt32.self)
        guard length != 0 else { return submitPackedWithoutData(slot: slot) }
        let dataFlags = base.load(fromByteOffset: Self.packedFlagsOffset, as: UInt16.self)
        let id = UInt16(truncatingIfNeeded: slot)
        let dataWord = PackedDriverVirtqueue.imageWord(length: length, id: id, flags: VirtqueueLayout.descriptorFlagNext | dataFlags)
        packedRing!.appendImageChain(id: id, count: 3, secondWord: dataWord)
    }

    /// The slot's own table (header, data if any, status) and one INDIRECT descriptor naming it.
    @usableFromInline @inline(never)
    mutating func submitPackedIndirect(slot: Int) {
        let base = slotBase(slot)
        let length = base.load(fromByteOffset: Self.packedLengthOffset, as: UInt32.self)
        let dataFlags = base.load(fromByteOffset: Self.packedFlagsOffset, as: UInt16.self)
        let headerAddress = slotAddressBase + UInt64(slot * QueueMemoryLayout.slotStride)
        let statusAddress = headerAddress + UInt64(QueueMemoryLayout.statusOffset)
        let dataAddress = dataAddressBase + UInt64(slot * dataStride)
        let table = base + QueueMemoryLayout.indirectTableOffset
        var entries = 0
        Self.writePackedTableEntry(table, entries, address: headerAddress, length: 16, flags: 0)
        entries += 1
        if length > 0 {
            Self.writePackedTableEntry(table, entries, address: dataAddress, length: length, flags: dataFlags)
            entries += 1
        }
        Self.writePackedTableEntry(table, entries, address: statusAddress, length: 1, flags: VirtqueueLayout.descriptorFlagWrite)
        entries += 1
        let id = UInt16(truncatingIfNeeded: slot)
        packedRing!.appendDescriptor(address: headerAddress + UInt64(QueueMemoryLayout.indirectTableOffset),
                                     length: UInt32(entries * 16), flags: VirtqueueLayout.descriptorFlagIndirect, id: id)
        packedRing!.finishChain(id: id)
    }

    /// A direct chain without data (a flush): header and status.
    @usableFromInline @inline(never)
    mutating func submitPackedWithoutData(slot: Int) {
        let headerAddress = slotAddressBase + UInt64(slot * QueueMemoryLayout.slotStride)
        packedRing!.appendRequest(header: headerAddress, data: 0, dataLength: 0, dataFlags: 0,
                                  status: headerAddress + UInt64(QueueMemoryLayout.statusOffset), id: UInt16(truncatingIfNeeded: slot))
    }

    /// One entry of a packed indirect table: the packed layout (id @12, flags @14), which
    /// differs from the split one (flags @12, next @14). The id is unused there.
    @inlinable
    static func writePackedTableEntry(_ table: UnsafeMutableRawPointer, _ index: Int, address: UInt64,
                                      length: UInt32, flags: UInt16) {
        let entry = table + index * PackedVirtqueueLayout.descriptorSize
        entry.storeBytes(of: address.littleEndian, as: UInt64.self)
        entry.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: UInt16(0), toByteOffset: 12, as: UInt16.self)
        entry.storeBytes(of: flags.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    /// Ring size (descriptors) of whichever layout the queue uses.
    public var ringSize: Int { isPacked ? Int(packedRing!.size) : Int(ring.size) }

    /// Completions waiting, or nil if the backend broke the ring (used index moved past the
    /// ring; a packed used descriptor naming an id not in flight). Packed: the batch counted
    /// last until it is all taken (see `PackedDriverVirtqueue.pendingUsedCount`).
    @inlinable
    public mutating func pendingCompletions() -> Int? {
        isPacked ? packedRing!.pendingUsedCount() : ring.pendingUsedCount()
    }

    /// The next completion; only after `pendingCompletions()` counted it.
    @inlinable
    public mutating func takeCompletion() -> (id: UInt32, length: UInt32) {
        isPacked ? packedRing!.popUsed() : ring.popUsed()
    }

    /// Asks for a call on the next completion; true if one is already there.
    @inlinable
    public func requestCallOnNextCompletion() -> Bool {
        isPacked ? packedRing!.requestCallOnNextUsed() : ring.requestCallOnNextUsed()
    }

    /// Asks the backend not to signal the call eventfd (polling).
    @inlinable
    public func suppressCalls() {
        if isPacked { packedRing!.suppressCalls() } else { ring.suppressCalls() }
    }
}
