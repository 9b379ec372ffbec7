import VhostUser

/// The driver's side of one packed virtqueue in test memory: it makes buffers available
/// (chains, indirect tables, hostile patterns) with its own wrap counter, and reads back the
/// used descriptors the device wrote, as a virtio driver would. Guest memory is a
/// `MockSplitQueue.flat` 1 MiB region (gpa == uva): descriptor ring at 0x1000, driver area at
/// 0x8000, device area at 0x8010; data buffers go at 0x10000 and above.
public final class MockPackedQueue: @unchecked Sendable {
    public let guest: MockSplitQueue
    public let size: Int
    public static let descriptorRing: UInt64 = 0x1000
    public static let driverArea: UInt64 = 0x8000
    public static let deviceArea: UInt64 = 0x8010

    /// The driver's next position to make available, and its wrap counter.
    public private(set) var nextAvailable = 0
    public private(set) var availableWrap = true
    /// Where the driver expects the next used descriptor, and the device's wrap counter there.
    public private(set) var nextUsed = 0
    public private(set) var usedWrap = true
    /// Descriptors per buffer id in flight (the driver skips that many after a used one).
    public private(set) var descriptorsOfID: [UInt16: Int] = [:]

    public init(size: Int, startingAt base: PackedVringBase = .initial) {
        guest = MockSplitQueue.flat(size: size)
        self.size = size
        nextAvailable = Int(base.availablePosition)
        availableWrap = base.availableWrap
        nextUsed = Int(base.usedPosition)
        usedWrap = base.usedWrap
    }

    public var memory: GuestMemory { guest.memory }

    public var addresses: PackedVirtqueue.RingAddresses {
        .init(descriptorRing: Self.descriptorRing, driverArea: Self.driverArea, deviceArea: Self.deviceArea)
    }

    /// The device's ring over this memory, starting where this driver starts.
    public func queue(features: VirtqueueFeatures = [], size: UInt32? = nil) throws -> PackedVirtqueue {
        try PackedVirtqueue(memory: memory, size: size ?? UInt32(self.size), addresses: addresses, features: features,
                            base: PackedVringBase(availablePosition: UInt16(nextAvailable), availableWrap: availableWrap,
                                                  usedPosition: UInt16(nextUsed), usedWrap: usedWrap))
    }

    public static func availableFlags(wrap: Bool) -> UInt16 { wrap ? 1 << 7 : 1 << 15 }

    /// Writes descriptor `position` of the ring (or of the table at `table`).
    public func setDescriptor(_ position: Int, address: UInt64, length: UInt32, id: UInt16, flags: UInt16,
                              table: UInt64? = nil) {
        let base = (table ?? Self.descriptorRing) + UInt64(16 * position)
        guest.write(address, at: base)
        guest.write(length, at: base + 8)
        guest.write(id, at: base + 12)
        guest.write(flags, at: base + 14)
    }

    public func flags(at position: Int) -> UInt16 { guest.read(UInt16.self, at: Self.descriptorRing + UInt64(16 * position) + 14) }
    public func setFlags(_ flags: UInt16, at position: Int) { guest.write(flags, at: Self.descriptorRing + UInt64(16 * position) + 14) }

    /// Makes a buffer available as a chain of ring descriptors, the head's flags written last.
    /// `id` goes into the last descriptor (and, as garbage the device must ignore, 0xEEEE into
    /// the others). `extraFlags` are or-ed into every descriptor.
    public func offer(_ buffers: [(gpa: UInt64, length: UInt32, writable: Bool)], id: UInt16, extraFlags: UInt16 = 0) {
        let head = nextAvailable
        let headWrap = availableWrap
        var headFlags: UInt16 = 0
        for (i, buffer) in buffers.enumerated() {
            var flags = Self.availableFlags(wrap: availableWrap) | extraFlags | (buffer.writable ? 2 : 0)
            if i < buffers.count - 1 { flags |= 1 }
            let last = i == buffers.count - 1
            if i == 0 {
                headFlags = flags
                setDescriptor(nextAvailable, address: buffer.gpa, length: buffer.length, id: last ? id : 0xEEEE, flags: 0)
                // The head looks used (previous lap) until the rest of the chain is written.
                setFlags(headWrap ? 0 : (1 << 7 | 1 << 15), at: head)
            } else {
                setDescriptor(nextAvailable, address: buffer.gpa, length: buffer.length, id: last ? id : 0xEEEE, flags: flags)
            }
            advanceAvailable()
        }
        descriptorsOfID[id] = buffers.count
        setFlags(headFlags, at: head)
    }

    /// Makes a buffer available as one INDIRECT descriptor naming a table at `table`.
    public func offerIndirect(table: UInt64, entries: [(gpa: UInt64, length: UInt32, writable: Bool)], id: UInt16,
                              tableLength: UInt32? = nil, entryFlags: UInt16 = 0, extraFlags: UInt16 = 0) {
        for (i, entry) in entries.enumerated() {
            setDescriptor(i, address: entry.gpa, length: entry.length, id: 0, flags: (entry.writable ? 2 : 0) | entryFlags,
                          table: table)
        }
        setDescriptor(nextAvailable, address: table, length: tableLength ?? UInt32(16 * entries.count), id: id,
                      flags: Self.availableFlags(wrap: availableWrap) | 4 | extraFlags)
        descriptorsOfID[id] = 1
        advanceAvailable()
    }

    private func advanceAvailable() {
        nextAvailable += 1
        if nextAvailable == size {
            nextAvailable = 0
            availableWrap.toggle()
        }
    }

    /// The next used descriptor the device published, as the driver reads it: (id, length,
    /// flags), or nil if none. Moves past the buffer's slots.
    public func takeUsed() -> (id: UInt16, length: UInt32, flags: UInt16)? {
        let base = Self.descriptorRing + UInt64(16 * nextUsed)
        let flags = guest.read(UInt16.self, at: base + 14)
        let avail = flags & (1 << 7) != 0
        let used = flags & (1 << 15) != 0
        guard avail == usedWrap, used == usedWrap else { return nil }
        let id = guest.read(UInt16.self, at: base + 12)
        let length = guest.read(UInt32.self, at: base + 8)
        let count = descriptorsOfID.removeValue(forKey: id) ?? 1
        nextUsed += count
        if nextUsed >= size {
            nextUsed -= size
            usedWrap.toggle()
        }
        return (id, length, flags)
    }

    /// Driver event suppression (what the device reads before interrupting).
    public func setDriverEvent(flags: UInt16, offWrap: UInt16 = 0) {
        guest.write(offWrap, at: Self.driverArea)
        guest.write(flags, at: Self.driverArea + 2)
    }

    /// Device event suppression as the device wrote it: (off_wrap, flags).
    public var deviceEvent: (offWrap: UInt16, flags: UInt16) {
        (guest.read(UInt16.self, at: Self.deviceArea), guest.read(UInt16.self, at: Self.deviceArea + 2))
    }
}
