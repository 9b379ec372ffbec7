import CSpindle

/// Taking available buffers off the packed ring.
extension PackedVirtqueue {
    /// 1 if a buffer is available at the device's position, else 0 (a packed ring cannot
    /// tell how many are waiting without walking them; callers only ask whether any are).
    /// Forced inline: the IOThread's poll loop asks this on every spin, and the call cost
    /// more than the check (bench/results/2026-12-07-packed-cost.md).
    @inlinable @inline(__always)
    public mutating func availableCount() throws(VirtqueueError) -> UInt16 {
        try availableHeadFlags() == nil ? 0 : 1
    }

    /// The flags of the descriptor at the device's position (one acquire load) if a buffer is
    /// available there, else nil (or the ring is broken). AVAIL and USED both at the driver's
    /// wrap counter is a used descriptor of the current lap, which only the device can have
    /// written, and only behind its position: a driver error; only that hostile pattern takes
    /// the out-of-line path, which breaks the ring and throws.
    @inlinable @inline(__always)
    public mutating func availableHeadFlags() throws(VirtqueueError) -> UInt16? {
        if broken { return nil }
        let flags = UInt16(littleEndian: spindle_load_acquire_u16(descriptors + 16 * Int(availPosition) + 14))
        let bits = flags & (PackedVirtqueueLayout.descriptorFlagAvailable | PackedVirtqueueLayout.descriptorFlagUsed)
        if bits == PackedVirtqueueLayout.availableFlags(wrap: availWrap) { return flags }
        if bits != PackedVirtqueueLayout.usedFlags(wrap: availWrap) { return nil }
        try breakOnUsedHead(flags)
    }

    /// The head at the device's position is a used descriptor of the current lap: a driver
    /// error (see `availableHeadFlags`). Breaks the ring and throws.
    @usableFromInline @inline(never)
    mutating func breakOnUsedHead(_ flags: UInt16) throws(VirtqueueError) -> Never {
        broken = true
        throw .availableFlagWithoutBuffer(position: availPosition, flags: flags)
    }

    /// The next available buffer's id, or nil if there is none (or the ring is broken). Walks
    /// the chain's flags to find its end (the id is in its last descriptor) and moves past it;
    /// `readChain(head:)` then reads the descriptors themselves.
    @inlinable
    public mutating func popAvailable() throws(VirtqueueError) -> UInt16? {
        if broken { return nil }
        do {
            return try takeAvailable()
        } catch {
            broken = true
            throw error
        }
    }

    @inlinable @inline(__always)
    mutating func takeAvailable() throws(VirtqueueError) -> UInt16? {
        // Acquire: the rest of the chain was written before the head's flags.
        guard var flags = try availableHeadFlags() else { return nil }
        let start = availPosition
        let head = descriptors + 16 * Int(start)
        var position = start
        var wrap = availWrap
        var last = head
        var count: UInt16 = 1
        if flags & VirtqueueLayout.descriptorFlagIndirect != 0 {
            guard flags & VirtqueueLayout.descriptorFlagNext == 0 else { throw .indirectWithNext }
        }
        while flags & VirtqueueLayout.descriptorFlagNext != 0 {
            guard count < size else { throw .chainTooLong(tableSize: UInt32(size)) }
            position = advanced(position, &wrap)
            last = descriptors + 16 * Int(position)
            flags = UInt16(littleEndian: last.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
            guard flags & VirtqueueLayout.descriptorFlagIndirect == 0 else { throw .indirectInChain }
            count += 1
        }
        let id = UInt16(littleEndian: last.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        guard id < size else { throw .bufferIdOutOfRange(id: id, queueSize: size) }
        guard buffers[Int(id)] == 0 else { throw .bufferIdInUse(id: id) }
        buffers[Int(id)] = UInt32(start) | UInt32(count) << 16
        availPosition = advanced(position, &wrap)
        availWrap = wrap
        popped += 1
        return id
    }
}
