import Qcow2Format

/// The arithmetic of the allocation worker's batching, apart so that it can be tested alone.
enum Qcow2AllocBatching {
    /// One refcount block's share of a run of clusters: the entries `firstIndex..<firstIndex
    /// + entries` of the block for table index `tableIndex`, held by the block's bytes
    /// `byteOffset..<byteOffset + byteCount` (read, changed and written back in one go).
    struct RefcountPiece: Equatable {
        var tableIndex: UInt64
        var firstIndex: UInt64
        var entries: UInt64
        var byteOffset: UInt64
        var byteCount: Int
    }

    /// The first piece of the run of `count` clusters from `cluster` (count > 0): up to the
    /// end of the run or of the refcount block, whichever comes first.
    static func refcountPiece(_ geometry: Qcow2RefcountGeometry, cluster: UInt64, count: UInt64) -> RefcountPiece {
        let (tableIndex, firstIndex) = geometry.locate(cluster: cluster)
        let entries = min(count, geometry.entriesPerBlock - firstIndex)
        let first = geometry.entryBytes(index: firstIndex)
        let last = geometry.entryBytes(index: firstIndex + entries - 1)
        return RefcountPiece(tableIndex: tableIndex, firstIndex: firstIndex, entries: entries, byteOffset: first.offset,
                             byteCount: Int(last.offset - first.offset) + last.count)
    }

    /// The same, for a geometry given by its numbers.
    static func refcountPiece(clusterBits: UInt32, refcountOrder: UInt32, cluster: UInt64, count: UInt64) -> RefcountPiece {
        refcountPiece(Qcow2RefcountGeometry(clusterBits: clusterBits, refcountOrder: refcountOrder), cluster: cluster, count: count)
    }

    /// Clusters reserved at once: about 32 MiB of them (one refcount round and one fdatasync
    /// for that much first-write data), at least 16 and at most 1024 clusters. A crash leaks
    /// at most this much (refcounts without data: qemu-img check -r leaks takes them back).
    static func reservationClusters(clusterBits: UInt32) -> UInt64 {
        let bytes: UInt64 = 32 << 20
        return min(1024, max(16, bytes >> UInt64(clusterBits)))
    }

    /// Whether two ranges of L2 entries of the same table overlap (a later request of a
    /// round waits for the next round then: it must see the earlier one's entries).
    static func overlaps(_ first: UInt64, _ count: UInt64, _ otherFirst: UInt64, _ otherCount: UInt64) -> Bool {
        first < otherFirst + otherCount && otherFirst < first + count
    }

    /// The whole clusters inside the guest range `position..<position + length`, as cluster
    /// indexes (empty if none): what a discard can free.
    static func wholeClusters(position: UInt64, length: UInt64, clusterBits: UInt32) -> Range<UInt64> {
        let size = UInt64(1) << UInt64(clusterBits)
        let first = (position + size - 1) >> UInt64(clusterBits)
        let end = (position + length) >> UInt64(clusterBits)
        return first < end ? first..<end : first..<first
    }
}
