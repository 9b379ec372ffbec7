import Qcow2Format

/// What a resize of the image (Qcow2Driver+Resize, on the control thread, every user
/// drained) needs of the allocator: clusters for a larger L1 table, and the old table's
/// clusters given back once nothing points at them.
extension Qcow2Allocator {
    /// `count` contiguous clusters whose refcount of 1 is durable, at the end of the image.
    /// Returns the first one's byte offset in the file, or -errno.
    public func claimDurableForResize(_ count: UInt64) -> Int64 {
        withLock {
            let first = claim(count)
            if first < 0 { return first }
            let rc = Qcow2SyncIO.datasync(fd)
            if rc < 0 { return Int64(rc) }
            return first << Int64(layout.clusterBits)
        }
    }

    /// Drops one reference to each of the `count` clusters from byte `offset` (a table
    /// nothing points at any more, durably). Returns 0 or -errno.
    public func releaseForResize(at offset: UInt64, count: UInt64) -> Int32 {
        withLock {
            let first = offset >> UInt64(layout.clusterBits)
            for cluster in first..<(first + count) {
                let rc = release(cluster)
                if rc < 0 { return rc }
            }
            return Qcow2SyncIO.datasync(fd)
        }
    }
}
