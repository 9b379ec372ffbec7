/// Dirty logging of the split ring's device writes. The used ring is logged at the
/// guest-physical address the frontend gave (log_guest_addr): flags at 0, idx at 2, element
/// i at 4 + 8i, avail_event at 4 + 8 * size.
extension SplitVirtqueue {
    @inlinable
    public mutating func logWritableBuffers(of chain: DescriptorChain, in log: DirtyLogBitmap) -> UInt64 {
        memory.markDirty(spans: chain.writableSpans, in: log)
    }

    /// The elements published since the last call (at most one ring's worth: anything more
    /// was overwritten in place), then used.idx.
    @inlinable
    public mutating func logPublishedUsed(at ringLogAddress: UInt64, in log: DirtyLogBitmap) -> UInt64 {
        let count = Int(publishedUsed &- loggedUsed)
        guard count > 0 else { return 0 }
        let first = Int(loggedUsed & mask)
        loggedUsed = publishedUsed
        let elements = ringLogAddress &+ 4
        var missed: UInt64
        if count >= Int(size) {
            missed = log.mark(gpa: elements, length: 8 * UInt64(size))
        } else if first + count <= Int(size) {
            missed = log.mark(gpa: elements &+ 8 * UInt64(first), length: 8 * UInt64(count))
        } else {
            // Wrapped: the ring's tail, then its start.
            let tail = Int(size) - first
            missed = log.mark(gpa: elements &+ 8 * UInt64(first), length: 8 * UInt64(tail))
            missed += log.mark(gpa: elements, length: 8 * UInt64(count - tail))
        }
        return missed + log.mark(gpa: ringLogAddress &+ 2, length: 2)
    }

    @inlinable
    public mutating func beginUsedRingLog() {
        loggedUsed = publishedUsed
    }

    public func logDeviceArea(at ringLogAddress: UInt64, in log: DirtyLogBitmap) -> UInt64 {
        log.mark(gpa: ringLogAddress, length: UInt64(VirtqueueLayout.usedRingBytes(size: Int(size))))
    }
}
