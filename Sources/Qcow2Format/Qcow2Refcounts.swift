/// Where a cluster's refcount lives and how to change it: the arithmetic of the write path,
/// kept apart from its I/O so that it can be tested on its own.
@frozen
public struct Qcow2RefcountGeometry: Sendable, Equatable {
    public var clusterBits: UInt32
    /// Entries are 1 << refcountOrder bits wide (0...6).
    public var refcountOrder: UInt32

    public init(clusterBits: UInt32, refcountOrder: UInt32) {
        self.clusterBits = clusterBits
        self.refcountOrder = refcountOrder
    }

    public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    /// Refcount entries in one refcount block (one cluster).
    public var entriesPerBlock: UInt64 { (clusterSize * 8) >> UInt64(refcountOrder) }
    /// Refcount-table entries one cluster of the table holds.
    public var tableEntriesPerCluster: UInt64 { clusterSize / 8 }
    /// The largest refcount an entry can hold (1 for 1-bit refcounts).
    public var maximumRefcount: UInt64 { refcountOrder == 6 ? .max : (1 << (1 << UInt64(refcountOrder))) - 1 }

    /// The refcount table index and the index inside that block for cluster `cluster`
    /// (a host offset divided by the cluster size).
    public func locate(cluster: UInt64) -> (tableIndex: UInt64, blockIndex: UInt64) {
        (cluster / entriesPerBlock, cluster % entriesPerBlock)
    }

    /// The bytes of a refcount block holding entry `index`: where they start and how many
    /// (one byte for entries narrower than a byte, which share it with their neighbours).
    public func entryBytes(index: UInt64) -> (offset: UInt64, count: Int) {
        let bits = UInt64(1) << UInt64(refcountOrder)
        return bits < 8 ? (index * bits / 8, 1) : (index * bits / 8, Int(bits / 8))
    }

    /// Reads entry `index` from `bytes`, which hold `entryBytes(index:)` of the block.
    public func value(in bytes: UnsafeRawBufferPointer, index: UInt64) -> UInt64 {
        let bits = 1 << Int(refcountOrder)
        if bits < 8 {
            let shift = Int(index % UInt64(8 / bits)) * bits
            return UInt64((bytes[0] >> UInt8(shift)) & UInt8((1 << bits) - 1))
        }
        var value: UInt64 = 0
        for i in 0..<(bits / 8) { value = value << 8 | UInt64(bytes[i]) }
        return value
    }

    /// Writes entry `index` into `bytes` (as `value(in:index:)` reads it), leaving the other
    /// entries sharing its byte alone. `value` must not exceed `maximumRefcount`.
    public func setValue(_ value: UInt64, in bytes: UnsafeMutableRawBufferPointer, index: UInt64) {
        precondition(value <= maximumRefcount, "refcount \(value) does not fit \(1 << refcountOrder) bits")
        let bits = 1 << Int(refcountOrder)
        if bits < 8 {
            let shift = UInt8(Int(index % UInt64(8 / bits)) * bits)
            let mask = UInt8((1 << bits) - 1) << shift
            bytes[0] = (bytes[0] & ~mask) | (UInt8(value) << shift)
            return
        }
        let width = bits / 8
        for i in 0..<width { bytes[i] = UInt8(truncatingIfNeeded: value >> UInt64((width - 1 - i) * 8)) }
    }

    /// Sizes a grown refcount table for an image whose clusters reach `endCluster` (exclusive)
    /// before the growth: the new table goes at `endCluster` and new refcount blocks right
    /// after it, one for each range from `oldEntries` on that the new table and the blocks
    /// themselves fall into. The table at least doubles (as QEMU grows it) and covers
    /// `neededEntries`.
    public func planGrowth(oldEntries: UInt64, neededEntries: UInt64, endCluster: UInt64) -> Qcow2RefcountGrowth {
        var entries = max(oldEntries * 2, neededEntries, 1)
        entries = (entries + tableEntriesPerCluster - 1) / tableEntriesPerCluster * tableEntriesPerCluster
        var blocks: UInt64 = 0
        while true {
            let tableClusters = entries / tableEntriesPerCluster
            let end = endCluster + tableClusters + blocks
            // Ranges from the first uncovered one up to the one holding the last new cluster.
            let firstNew = max(oldEntries, endCluster / entriesPerBlock)
            let lastRange = (end - 1) / entriesPerBlock
            let neededBlocks = lastRange >= firstNew ? lastRange - firstNew + 1 : 0
            if lastRange >= entries {
                entries = (lastRange + 1 + tableEntriesPerCluster - 1) / tableEntriesPerCluster * tableEntriesPerCluster
                continue
            }
            if neededBlocks == blocks {
                return Qcow2RefcountGrowth(tableCluster: endCluster, tableClusters: tableClusters, entries: entries,
                                           firstBlockCluster: endCluster + tableClusters, firstBlockRange: firstNew, blocks: blocks)
            }
            blocks = neededBlocks
        }
    }
}

/// Where a grown refcount table and its new refcount blocks go (clusters, not bytes).
public struct Qcow2RefcountGrowth: Sendable, Equatable {
    public var tableCluster: UInt64
    public var tableClusters: UInt64
    public var entries: UInt64
    /// Block i (0..<blocks) sits at cluster firstBlockCluster + i and covers range
    /// firstBlockRange + i.
    public var firstBlockCluster: UInt64
    public var firstBlockRange: UInt64
    public var blocks: UInt64

    /// The first cluster after everything the growth places.
    public var endCluster: UInt64 { firstBlockCluster + blocks }
}
