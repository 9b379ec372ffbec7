import Testing
@testable import Qcow2Format

/// The write path's refcount arithmetic: where a cluster's count lives, writing one entry
/// without touching its neighbours (every width), and planning the refcount table's growth.
struct Qcow2RefcountTests {
    @Test(arguments: [UInt32(0), 1, 2, 3, 4, 5, 6])
    func setValueChangesOnlyItsEntryAndReadsBack(order: UInt32) {
        let geometry = Qcow2RefcountGeometry(clusterBits: 9, refcountOrder: order)
        var block = [UInt8](repeating: 0, count: 512)
        let count = Int(geometry.entriesPerBlock)
        let maximum = geometry.maximumRefcount
        // Every entry a different value (within the width), written through its own bytes.
        for index in 0..<count {
            let value = UInt64(index + 1) % (maximum == .max ? UInt64.max : maximum + 1)
            let (offset, width) = geometry.entryBytes(index: UInt64(index))
            block.withUnsafeMutableBytes { bytes in
                geometry.setValue(value, in: UnsafeMutableRawBufferPointer(rebasing: bytes[Int(offset)..<(Int(offset) + width)]), index: UInt64(index))
            }
        }
        for index in 0..<count {
            let expected = UInt64(index + 1) % (maximum == .max ? UInt64.max : maximum + 1)
            // Read back with the decoder the read path uses, over the whole block.
            let read = block.withUnsafeBytes { Qcow2Entries.refcount(in: $0, index: index, order: order) }
            #expect(read == expected, "order \(order) index \(index)")
            let (offset, width) = geometry.entryBytes(index: UInt64(index))
            let direct = block.withUnsafeBytes { geometry.value(in: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + width)]), index: UInt64(index)) }
            #expect(direct == expected)
        }
    }

    @Test func sixteenBitEntriesAreBigEndian() {
        let geometry = Qcow2RefcountGeometry(clusterBits: 16, refcountOrder: 4)
        var bytes: [UInt8] = [0, 0]
        bytes.withUnsafeMutableBytes { geometry.setValue(0x0102, in: $0, index: 7) }
        #expect(bytes == [1, 2])
        #expect(geometry.entryBytes(index: 7) == (14, 2))
    }

    @Test func oneBitEntriesShareBytesLowBitsFirst() {
        let geometry = Qcow2RefcountGeometry(clusterBits: 16, refcountOrder: 0)
        var byte: [UInt8] = [0b1000_0000]
        byte.withUnsafeMutableBytes { geometry.setValue(1, in: $0, index: 8 + 2) }
        #expect(byte == [0b1000_0100])
        #expect(geometry.entryBytes(index: 10) == (1, 1))
        #expect(geometry.maximumRefcount == 1)
    }

    @Test func locatesClustersInTheTableAndTheirBlock() {
        // 64 KiB clusters, 16-bit refcounts: 32768 entries a block.
        let geometry = Qcow2RefcountGeometry(clusterBits: 16, refcountOrder: 4)
        #expect(geometry.entriesPerBlock == 32768)
        #expect(geometry.locate(cluster: 32767) == (0, 32767))
        #expect(geometry.locate(cluster: 32768 * 3 + 5) == (3, 5))
        // 512-byte clusters, 64-bit refcounts: 64 entries a block, 64 table entries a cluster.
        let small = Qcow2RefcountGeometry(clusterBits: 9, refcountOrder: 6)
        #expect(small.entriesPerBlock == 64)
        #expect(small.tableEntriesPerCluster == 64)
    }

    @Test func growthDoublesTheTableAndCoversItsOwnClusters() {
        // 512-byte clusters, 64-bit refcounts: the one-cluster table (64 entries) covers
        // 4096 clusters; the image ends there.
        let geometry = Qcow2RefcountGeometry(clusterBits: 9, refcountOrder: 6)
        let plan = geometry.planGrowth(oldEntries: 64, neededEntries: 65, endCluster: 4096)
        #expect(plan.entries == 128)
        #expect(plan.tableClusters == 2)
        #expect(plan.tableCluster == 4096)
        // Table at 4096-4097, one new block at 4098 for range 64 (clusters 4096..<4160).
        #expect(plan.blocks == 1)
        #expect(plan.firstBlockCluster == 4098)
        #expect(plan.firstBlockRange == 64)
        #expect(plan.endCluster == 4099)
    }

    @Test func growthAddsBlocksUntilEveryPlacedClusterIsCovered() {
        // 512-byte clusters, 64-bit refcounts (64 clusters a block): a table that ends at
        // a range boundary pushes its own block into the next range, which needs one too.
        let geometry = Qcow2RefcountGeometry(clusterBits: 9, refcountOrder: 6)
        let plan = geometry.planGrowth(oldEntries: 64, neededEntries: 200, endCluster: 4096 + 60)
        // 200 entries round up to 256 (4 clusters); the table (4156..<4160) and block
        // (4160) straddle ranges 64 and 65: two blocks.
        #expect(plan.entries == 256)
        #expect(plan.tableClusters == 4)
        #expect(plan.blocks == 2)
        #expect(plan.firstBlockRange == 64)
        for cluster in plan.tableCluster..<plan.endCluster {
            let range = geometry.locate(cluster: cluster).tableIndex
            #expect(range >= plan.firstBlockRange && range < plan.firstBlockRange + plan.blocks)
            #expect(range < plan.entries)
        }
    }
}
