@testable import BlockIO
import Testing

/// The allocation worker's batching arithmetic: how a run of clusters splits into refcount
/// block pieces (one read and one write each), the reservation's size, which pieces of a
/// round conflict, and which clusters a discard can free.
@Suite struct Qcow2AllocBatchingTests {
    @Test func aRunInsideOneBlockIsOnePieceCoveringItsEntriesBytes() {
        // 64 KiB clusters, 16-bit refcounts: 32768 entries per block, 2 bytes each.
        let piece = Qcow2AllocBatching.refcountPiece(clusterBits: 16, refcountOrder: 4, cluster: 100, count: 64)
        #expect(piece == .init(tableIndex: 0, firstIndex: 100, entries: 64, byteOffset: 200, byteCount: 128))
    }

    @Test func aRunStopsAtTheEndOfItsBlock() {
        let first = Qcow2AllocBatching.refcountPiece(clusterBits: 16, refcountOrder: 4, cluster: 32760, count: 20)
        #expect(first == .init(tableIndex: 0, firstIndex: 32760, entries: 8, byteOffset: 65520, byteCount: 16))
        let second = Qcow2AllocBatching.refcountPiece(clusterBits: 16, refcountOrder: 4, cluster: 32768, count: 12)
        #expect(second == .init(tableIndex: 1, firstIndex: 0, entries: 12, byteOffset: 0, byteCount: 24))
    }

    @Test func subByteRefcountsShareTheirBytes() {
        // 512-byte clusters, 1-bit refcounts: 4096 entries per block, 8 per byte.
        let piece = Qcow2AllocBatching.refcountPiece(clusterBits: 9, refcountOrder: 0, cluster: 6, count: 5)
        #expect(piece == .init(tableIndex: 0, firstIndex: 6, entries: 5, byteOffset: 0, byteCount: 2))
        let wide = Qcow2AllocBatching.refcountPiece(clusterBits: 9, refcountOrder: 6, cluster: 70, count: 100)
        // 64-bit refcounts: 64 entries per block.
        #expect(wide == .init(tableIndex: 1, firstIndex: 6, entries: 58, byteOffset: 48, byteCount: 464))
    }

    @Test func theReservationIsAbout32MiBWithinItsBounds() {
        #expect(Qcow2AllocBatching.reservationClusters(clusterBits: 16) == 512)
        #expect(Qcow2AllocBatching.reservationClusters(clusterBits: 21) == 16)
        #expect(Qcow2AllocBatching.reservationClusters(clusterBits: 9) == 1024)
        #expect(Qcow2AllocBatching.reservationClusters(clusterBits: 12) == 1024)
    }

    @Test func entryRangesConflictOnlyWhenTheyShareAnEntry() {
        #expect(Qcow2AllocBatching.overlaps(10, 2, 11, 1))
        #expect(Qcow2AllocBatching.overlaps(10, 1, 5, 6))
        #expect(!Qcow2AllocBatching.overlaps(10, 2, 12, 3))
        #expect(!Qcow2AllocBatching.overlaps(10, 2, 8, 2))
    }

    @Test func aRoundDefersAPieceThatTouchesAnEarlierPlansEntriesOrNewTable() throws {
        let round = try #require(Qcow2AllocRound(clusterSize: 65536))
        let request = UnsafeMutablePointer<BlockRequest>.allocate(capacity: 1)
        defer { request.deallocate() }
        round.plans.append(Qcow2AllocPlan(request: request, l1Index: 3, spanFirst: 10, spanCount: 2))
        #expect(round.conflicts(l1Index: 3, first: 11, count: 4))
        #expect(!round.conflicts(l1Index: 3, first: 12, count: 4))
        #expect(!round.conflicts(l1Index: 4, first: 10, count: 2))
        var newTable = Qcow2AllocPlan(request: request, l1Index: 5, spanFirst: 0, spanCount: 1)
        newTable.tableAt = 0
        round.plans.append(newTable)
        #expect(round.conflicts(l1Index: 5, first: 100, count: 1))
        round.reset()
        #expect(!round.conflicts(l1Index: 3, first: 10, count: 2))
    }

    @Test func theArenaKeepsEarlierOffsetsWhenItGrows() throws {
        let round = try #require(Qcow2AllocRound(clusterSize: 512))
        let first = try #require(round.reserve(12))
        round.arena.storeBytes(of: 0xfeed, toByteOffset: first, as: UInt64.self)
        let second = try #require(round.reserve(1 << 20))
        #expect(first == 0 && second == 16)
        #expect(round.arena.load(fromByteOffset: first, as: UInt64.self) == 0xfeed)
    }

    @Test func aDiscardFreesOnlyTheWholeClustersInsideIt() {
        #expect(Qcow2AllocBatching.wholeClusters(position: 0, length: 131072, clusterBits: 16) == 0..<2)
        #expect(Qcow2AllocBatching.wholeClusters(position: 4096, length: 131072, clusterBits: 16) == 1..<2)
        #expect(Qcow2AllocBatching.wholeClusters(position: 4096, length: 65536, clusterBits: 16).isEmpty)
        #expect(Qcow2AllocBatching.wholeClusters(position: 65536, length: 65536, clusterBits: 16) == 1..<2)
    }
}
