/// Dirty logging of the packed ring's device writes: used descriptors go into the descriptor
/// ring (logged at its own guest-physical address, found at setup), kick suppression into
/// the device area, which is what QEMU passes as log_guest_addr for a packed ring.
extension PackedVirtqueue {
    @inlinable
    public mutating func logWritableBuffers(of chain: DescriptorChain, in log: DirtyLogBitmap) -> UInt64 {
        memory.markDirty(spans: chain.writableSpans, in: log)
    }

    /// The descriptor ring slots published since the last call: one contiguous range of ring
    /// positions (the skipped slots of chains between used descriptors are marked too; they
    /// are in the same pages), split in two where it wraps.
    @inlinable
    public mutating func logPublishedUsed(at ringLogAddress: UInt64, in log: DirtyLogBitmap) -> UInt64 {
        let count = publishedSlots &- loggedSlots
        guard count > 0 else { return 0 }
        let first = UInt64(loggedPosition)
        loggedSlots = publishedSlots
        loggedPosition = publishedPosition
        let ring = descriptorRingGuestAddress
        let ringSize = UInt64(size)
        let slots = UInt64(count)
        if slots >= ringSize {
            return log.mark(gpa: ring, length: 16 * ringSize)
        }
        if first + slots <= ringSize {
            return log.mark(gpa: ring &+ 16 * first, length: 16 * slots)
        }
        let tail = ringSize - first
        return log.mark(gpa: ring &+ 16 * first, length: 16 * tail) + log.mark(gpa: ring, length: 16 * (slots - tail))
    }

    @inlinable
    public mutating func beginUsedRingLog() {
        loggedSlots = publishedSlots
        loggedPosition = publishedPosition
    }

    /// The whole descriptor ring and the device area.
    public func logDeviceArea(at ringLogAddress: UInt64, in log: DirtyLogBitmap) -> UInt64 {
        log.mark(gpa: descriptorRingGuestAddress, length: 16 * UInt64(size))
            + log.mark(gpa: ringLogAddress, length: UInt64(PackedVirtqueueLayout.eventSuppressionBytes))
    }
}
