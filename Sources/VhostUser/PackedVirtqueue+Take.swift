import CSpindle

/// Taking the next available buffer off the packed ring and walking it into host spans in
/// one pass over its descriptors: the server's hot path.
///
/// The chain's last descriptor holds the buffer id, so finding the id and collecting the
/// spans is one walk: each descriptor is read once (address, length, flags; the id from the
/// last one), validated and translated as it is read. The two-step `popAvailable()` +
/// `walkBuffer(id:into:)` does the same work in two walks (the flags twice) and is kept for
/// tools and tests that want the id before the spans.
extension PackedVirtqueue {
    /// The next available buffer's id with its spans in `chain` (device-readable first, then
    /// device-writable), or nil if there is none (or the ring is broken). Checks, in order of
    /// reading: the head's AVAIL/USED bits against the driver's wrap counter, every
    /// descriptor's buffer (in guest memory, no wrap-around, readable before writable, total
    /// below 4 GiB, fits the chain), INDIRECT only on a lone descriptor (its table walked
    /// one level deep), the chain no longer than the ring, and the id (in range, not in
    /// flight). On error `chain` is empty and the ring is broken; on nil the ring is unchanged.
    /// One error leaves the ring unchanged and unbroken: `.tooManySpans`, a buffer longer
    /// than `chain` holds, which the caller may take again into a larger chain (a server
    /// whose slots hold short chains borrows room for it) or give up on with `markBroken()`.
    /// Out of line, like the split ring's walk: one call per request, none per descriptor.
    /// The server reads the head's flags itself (`availableHeadFlags`, inline: an empty ring
    /// costs no call) and hands them to `takeAvailable(into:headFlags:)`.
    public mutating func takeAvailable(into chain: DescriptorChain) throws(VirtqueueError) -> UInt16? {
        let flags: UInt16?
        do {
            flags = try availableHeadFlags()
        } catch {
            chain.clear()
            throw error
        }
        guard let flags else { return nil }
        return try takeAvailable(into: chain, headFlags: flags)
    }

    /// `takeAvailable(into:)` for the available head whose flags `availableHeadFlags()` read
    /// (the walk uses those, never a second read of them).
    public mutating func takeAvailable(into chain: DescriptorChain, headFlags: UInt16) throws(VirtqueueError) -> UInt16? {
        do {
            return try walkAvailable(into: chain, headFlags: headFlags)
        } catch {
            chain.clear()
            // Nothing is taken before the walk ends (id, position and count are stored last).
            if case .tooManySpans = error { throw error }
            broken = true
            throw error
        }
    }

    @inline(__always)
    mutating func walkAvailable(into chain: DescriptorChain, headFlags: UInt16) throws(VirtqueueError) -> UInt16? {
        let ring = UnsafeRawPointer(descriptors)
        let start = Int(availPosition)
        var descriptor = ring + 16 * start
        var flags = headFlags
        let ringSize = Int(size)
        let ringEnd = ring + 16 * ringSize
        var writer = PackedSpanWriter(chain: chain, memory: memory)
        // Descriptors the chain may still have (a chain is at most the ring). The loop keeps
        // only this and a pointer; count, position and wrap counter are worked out once, after it.
        var remaining = ringSize - 1
        while true {
            let address = UInt64(littleEndian: descriptor.loadUnaligned(as: UInt64.self))
            let length = UInt32(littleEndian: descriptor.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            if flags & VirtqueueLayout.descriptorFlagIndirect != 0 {
                guard remaining == ringSize - 1 else { throw .indirectInChain }
                guard flags & VirtqueueLayout.descriptorFlagNext == 0 else { throw .indirectWithNext }
                // The table's entries, in order (this walk's own loop: a call taking the
                // writer would keep it on the stack for every request).
                var entry = try Self.indirectTable(address: address, length: length, memory: memory, features: features)
                let tableEnd = entry + Int(length)
                repeat {
                    let entryFlags = UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
                    guard entryFlags & VirtqueueLayout.descriptorFlagIndirect == 0 else { throw .nestedIndirect }
                    try writer.append(address: UInt64(littleEndian: entry.loadUnaligned(as: UInt64.self)),
                                      length: UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                                      writable: entryFlags & VirtqueueLayout.descriptorFlagWrite != 0, memory: memory)
                    entry += 16
                } while entry != tableEnd
                break
            }
            try writer.append(address: address, length: length,
                              writable: flags & VirtqueueLayout.descriptorFlagWrite != 0, memory: memory)
            guard flags & VirtqueueLayout.descriptorFlagNext != 0 else { break }
            guard remaining > 0 else { throw .chainTooLong(tableSize: UInt32(size)) }
            remaining -= 1
            descriptor += 16
            if descriptor == ringEnd { descriptor = ring }
            flags = UInt16(littleEndian: descriptor.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
        }
        // `descriptor` is the chain's last ring descriptor: the id is there.
        let id = UInt16(littleEndian: descriptor.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        guard id < size else { throw .bufferIdOutOfRange(id: id, queueSize: size) }
        guard buffers[Int(id)] == 0 else { throw .bufferIdInUse(id: id) }
        let count = ringSize - remaining
        buffers[Int(id)] = UInt32(truncatingIfNeeded: start | count << 16)
        // count <= size: past the ring's end at most once.
        var next = start + count
        if next >= ringSize {
            next -= ringSize
            availWrap.toggle()
        }
        availPosition = UInt16(truncatingIfNeeded: next)
        popped += 1
        writer.finish(chain, head: id)
        return id
    }

    /// A lone INDIRECT descriptor's table, checked (negotiated, a whole number of entries,
    /// not too many, in one region: it is read as one piece). Static, so that the walk's
    /// ring (`self`) is not copied for the call.
    static func indirectTable(address: UInt64, length: UInt32, memory: GuestMemory,
                              features: VirtqueueFeatures) throws(VirtqueueError) -> UnsafeRawPointer {
        guard features.contains(.indirectDescriptors) else { throw .indirectNotNegotiated }
        guard length != 0, length % UInt32(PackedVirtqueueLayout.descriptorSize) == 0,
              length / UInt32(PackedVirtqueueLayout.descriptorSize) <= UInt32(VirtqueueLayout.maximumIndirectDescriptors)
        else { throw .invalidIndirectTableLength(length) }
        guard let table = memory.translate(gpa: address, length: UInt64(length)) else {
            throw .indirectTableNotMapped(address: address, length: length)
        }
        return UnsafeRawPointer(table)
    }
}
