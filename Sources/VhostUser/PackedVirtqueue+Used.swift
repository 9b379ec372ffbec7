import CSpindle

/// Writing used descriptors. A batch's descriptors are written in completion order; the
/// first one's flags are stored last, with release ordering, by `publishUsed`: the driver
/// reads used descriptors in ring order, so it sees the whole batch or none of it.
extension PackedVirtqueue {
    /// Writes the used descriptor for buffer `id` (id, written length, flags with AVAIL and
    /// USED at the device's wrap counter) and skips the buffer's other ring slots. Invisible
    /// to the driver until `publishUsed()`. An id not in flight is ignored.
    /// Forced inline into the server's `finish`, and kept short so that `finish` itself
    /// stays inlinable (bench/results/2026-12-06-packed-cost.md).
    @inlinable @inline(__always)
    public mutating func addUsed(head id: UInt16, writtenLength: UInt32) {
        guard id < size else { return }
        let entry = buffers[Int(id)]
        guard entry != 0 else { return }
        buffers[Int(id)] = 0
        // Only an inflight tracker reads the batch's ids (capacity 0 without one).
        if batchIDCount < batchIDCapacity {
            batchIDs[batchIDCount] = id
            batchIDCount &+= 1
        }
        let descriptor = descriptors + 16 * Int(usedPosition)
        descriptor.storeBytes(of: writtenLength.littleEndian, toByteOffset: 8, as: UInt32.self)
        descriptor.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        // AVAIL and USED both at the wrap counter (kept as flags); WRITE in a used
        // descriptor: the device wrote data into the buffer.
        let flags = usedWrapFlags | (writtenLength > 0 ? VirtqueueLayout.descriptorFlagWrite : 0)
        if batchPending {
            descriptor.storeBytes(of: flags.littleEndian, toByteOffset: 14, as: UInt16.self)
        } else {
            // The first of the batch, at `publishedPosition`: its flags wait for publishUsed.
            batchPending = true
            batchFirstFlags = flags
        }
        let count = UInt16(truncatingIfNeeded: entry >> 16)
        // count <= size <= 32768 and usedPosition < size: no UInt16 overflow.
        var next = usedPosition &+ count
        if next >= size {
            next &-= size
            usedWrapFlags ^= PackedVirtqueueLayout.usedFlags(wrap: true)
        }
        usedPosition = next
        usedSlots &+= UInt32(count)
        // Every id with a table entry was counted in by the take (or by restore): no check.
        popped &-= 1
    }

    /// Makes every used descriptor added so far visible to the driver. Forced inline (into
    /// the server's end of batch, as split's is).
    @inlinable @inline(__always)
    public mutating func publishUsed() {
        guard batchPending else { return }
        spindle_store_release_u16(descriptors + 16 * Int(publishedPosition) + 14, batchFirstFlags.littleEndian)
        batchPending = false
        batchIDCount = 0
        publishedSlots = usedSlots
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
