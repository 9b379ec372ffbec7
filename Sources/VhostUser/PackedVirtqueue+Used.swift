import CSpindle

/// Writing used descriptors. `addUsed` only records a finished buffer (id, written length,
/// descriptor count) in the batch; `publishUsed` writes the batch's used descriptors in one
/// loop, with the position, wrap counter and flags in registers, and stores the first one's
/// flags last, with release ordering: the driver reads used descriptors in ring order, so it
/// sees the whole batch or none of it (virtio 1.1, 2.7.21: a batch is published by its first
/// descriptor's flags).
extension PackedVirtqueue {
    /// Records the used descriptor for buffer `id` (written length; flags with AVAIL and USED
    /// at the device's wrap counter, WRITE if the device wrote data). The id is free again at
    /// once; the descriptor is written and made visible to the driver by `publishUsed()`. An
    /// id not in flight is ignored.
    @inlinable
    public mutating func addUsed(head id: UInt16, writtenLength: UInt32) {
        guard id < size else { return }
        let entry = buffers[Int(id)]
        guard entry != 0 else { return }
        buffers[Int(id)] = 0
        if popped > 0 { popped -= 1 }
        guard batchIDCount < Int(size) else { return addUsedBeyondBatch(id: id, writtenLength: writtenLength, entry: entry) }
        batchIDs[batchIDCount] = id
        // The written length and the buffer's descriptor count (entry's high half).
        batchWords[batchIDCount] = UInt64(writtenLength) | UInt64(entry >> 16) << 32
        batchIDCount += 1
    }

    /// More buffers finished in one batch than the ring has ids (only a driver that makes ids
    /// available again before it could see them used): the batch so far is written and this
    /// descriptor too, not recorded (the inflight tracker does not hear of it).
    @inline(never) @usableFromInline
    mutating func addUsedBeyondBatch(id: UInt16, writtenLength: UInt32, entry: UInt32) {
        writeUsedBatch()
        var position = usedPosition, wrap = usedWrap, slots = batchSlots
        writeUsedDescriptor(id: id, word: UInt64(writtenLength) | UInt64(entry >> 16) << 32,
                            position: &position, wrap: &wrap, slots: &slots)
        usedPosition = position
        usedWrap = wrap
        batchSlots = slots
    }

    /// Writes the used descriptors recorded since the last write (all but a batch's first
    /// one's flags) and moves the used position past their buffers. Still invisible to the
    /// driver; `publishUsed` calls it (and the inflight tracker, which needs the new used
    /// position before the flags store).
    @inlinable
    public mutating func writeUsedBatch() {
        guard batchWritten < batchIDCount else { return }
        var position = usedPosition, wrap = usedWrap, slots = batchSlots
        for k in batchWritten..<batchIDCount {
            writeUsedDescriptor(id: batchIDs[k], word: batchWords[k], position: &position, wrap: &wrap, slots: &slots)
        }
        batchWritten = batchIDCount
        usedPosition = position
        usedWrap = wrap
        batchSlots = slots
    }

    /// One used descriptor at `position`: id and length, and its flags unless it opens the
    /// batch (then they are kept for `publishUsed`); then `position` moves past the buffer's
    /// `word >> 32` ring slots.
    @inlinable @inline(__always)
    mutating func writeUsedDescriptor(id: UInt16, word: UInt64, position: inout UInt16, wrap: inout Bool,
                                      slots: inout UInt32) {
        let length = UInt32(truncatingIfNeeded: word)
        let count = UInt16(truncatingIfNeeded: word >> 32)
        let descriptor = descriptors + 16 * Int(position)
        descriptor.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        descriptor.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        // WRITE in a used descriptor: the device wrote data into the buffer.
        let flags = PackedVirtqueueLayout.usedFlags(wrap: wrap) | (length > 0 ? VirtqueueLayout.descriptorFlagWrite : 0)
        if batchPending {
            descriptor.storeBytes(of: flags.littleEndian, toByteOffset: 14, as: UInt16.self)
        } else {
            batchPending = true
            batchFirstPosition = position
            batchFirstFlags = flags
        }
        // count <= size <= 32768 and position < size: no UInt16 overflow.
        var next = position + count
        if next >= size {
            next -= size
            wrap.toggle()
        }
        position = next
        slots &+= UInt32(count)
    }

    /// Makes every used descriptor added so far visible to the driver.
    @inlinable
    public mutating func publishUsed() {
        writeUsedBatch()
        guard batchPending else { return }
        spindle_store_release_u16(descriptors + 16 * Int(batchFirstPosition) + 14, batchFirstFlags.littleEndian)
        batchPending = false
        batchIDCount = 0
        batchWritten = 0
        publishedSlots &+= batchSlots
        batchSlots = 0
        publishedPosition = usedPosition
        publishedWrap = usedWrap
    }

    /// `addUsed` + `publishUsed` for one buffer.
    @inlinable
    public mutating func pushUsed(head id: UInt16, writtenLength: UInt32) {
        addUsed(head: id, writtenLength: writtenLength)
        publishUsed()
    }
}
