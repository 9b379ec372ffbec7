import VhostUser

/// The packed-ring side of `BlkQueue`, and the calls that serve both layouts.
///
/// `prepare` records the data length and direction in the slot (driver-private bytes
/// 20..<28 of its 128); `submit` then writes the chain at the ring's next position: header,
/// data (none for a flush), status; or, with indirect descriptors, the slot's own table and
/// one INDIRECT descriptor naming it. The buffer id is the slot number.
extension BlkQueue {
    @usableFromInline static let packedLengthOffset = 20
    @usableFromInline static let packedFlagsOffset = 24

    @inlinable
    func preparePacked(slot: Int, deviceWritesData: Bool, byteCount: Int) {
        let base = slotBase(slot)
        base.storeBytes(of: UInt32(truncatingIfNeeded: byteCount), toByteOffset: Self.packedLengthOffset, as: UInt32.self)
        let flags = deviceWritesData ? VirtqueueLayout.descriptorFlagWrite : 0
        base.storeBytes(of: flags, toByteOffset: Self.packedFlagsOffset, as: UInt16.self)
    }

    @inlinable
    mutating func submitPacked(slot: Int) {
        let base = slotBase(slot)
        let length = base.load(fromByteOffset: Self.packedLengthOffset, as: UInt32.self)
        let dataFlags = base.load(fromByteOffset: Self.packedFlagsOffset, as: UInt16.self)
        let id = UInt16(truncatingIfNeeded: slot)
        let headerAddress = slotAddressBase + UInt64(slot * QueueMemoryLayout.slotStride)
        let statusAddress = headerAddress + UInt64(QueueMemoryLayout.statusOffset)
        let dataAddress = dataAddressBase + UInt64(slot * dataStride)
        let write = VirtqueueLayout.descriptorFlagWrite
        if indirect {
            let table = base + QueueMemoryLayout.indirectTableOffset
            var entries = 0
            Self.writePackedTableEntry(table, entries, address: headerAddress, length: 16, flags: 0)
            entries += 1
            if length > 0 {
                Self.writePackedTableEntry(table, entries, address: dataAddress, length: length, flags: dataFlags)
                entries += 1
            }
            Self.writePackedTableEntry(table, entries, address: statusAddress, length: 1, flags: write)
            entries += 1
            packedRing!.appendDescriptor(address: headerAddress + UInt64(QueueMemoryLayout.indirectTableOffset),
                                         length: UInt32(entries * 16), flags: VirtqueueLayout.descriptorFlagIndirect, id: id)
            packedRing!.finishChain(id: id)
        } else {
            packedRing!.appendRequest(header: headerAddress, data: dataAddress, dataLength: length, dataFlags: dataFlags,
                                      status: statusAddress, id: id)
        }
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
    /// ring; a packed used descriptor naming an id not in flight).
    @inlinable
    public func pendingCompletions() -> Int? {
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
