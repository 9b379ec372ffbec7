@testable import BlockIO
import Glibc
import Testing

/// The qcow2 data path's pieces without a ring: cutting a guest's iovecs into a piece's
/// iovecs, zero-filling and copying into them, and the shared L2 cache.
@Suite struct Qcow2DataPathTests {
    /// Three guest buffers of 100, 1 and 411 bytes (512 in all), 0xAA-filled.
    final class GuestBuffers {
        let storage = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 64)
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 3)
        var request = BlockRequest()
        init() {
            memset(storage, 0xAA, 512)
            iov[0] = iovec(iov_base: storage, iov_len: 100)
            iov[1] = iovec(iov_base: storage + 100, iov_len: 1)
            iov[2] = iovec(iov_base: storage + 101, iov_len: 411)
            request.iov = iov
            request.iovcnt = 3
            request.length = 512
        }
        deinit {
            request.releaseScratch()
            storage.deallocate()
            iov.deallocate()
        }
        var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: storage, count: 512)) }
    }

    @Test func aPieceAcrossBuffersBecomesTheirSlices() {
        let guest = GuestBuffers()
        withUnsafeMutablePointer(to: &guest.request) { request in
            #expect(Qcow2Pieces.reserveScratch(request, extra: 0))
            let piece = Qcow2Pieces.slice(request, from: 99, count: 10)
            #expect(piece.count == 3)
            #expect(piece.iov[0].iov_base == guest.storage + 99 && piece.iov[0].iov_len == 1)
            #expect(piece.iov[1].iov_base == guest.storage + 100 && piece.iov[1].iov_len == 1)
            #expect(piece.iov[2].iov_base == guest.storage + 101 && piece.iov[2].iov_len == 8)
            let tail = Qcow2Pieces.slice(request, from: 101, count: 411)
            #expect(tail.count == 1 && tail.iov[0].iov_base == guest.storage + 101 && tail.iov[0].iov_len == 411)
        }
    }

    @Test func zeroesAndCopiesLandExactlyInTheirRange() {
        let guest = GuestBuffers()
        withUnsafeMutablePointer(to: &guest.request) { request in
            Qcow2Pieces.fill(request, from: 98, count: 5)
            let source = [UInt8](repeating: 0x5C, count: 20)
            source.withUnsafeBytes { Qcow2Pieces.copy(request, from: $0.baseAddress!, to: 492, count: 20) }
        }
        let bytes = guest.bytes
        #expect(bytes[97] == 0xAA && bytes[98..<103].allSatisfy { $0 == 0 } && bytes[103] == 0xAA)
        #expect(bytes[491] == 0xAA && bytes[492..<512].allSatisfy { $0 == 0x5C })
    }

    @Test func growingTheScratchForgetsTheTableItHeld() {
        let guest = GuestBuffers()
        withUnsafeMutablePointer(to: &guest.request) { request in
            #expect(Qcow2Pieces.reserveScratch(request, extra: 512))
            request.pointee.formatTableDepth = 0
            #expect(Qcow2Pieces.reserveScratch(request, extra: 512))
            #expect(request.pointee.formatTableDepth == 0)  // fits: kept
            #expect(Qcow2Pieces.reserveScratch(request, extra: 1 << 20))
            #expect(request.pointee.formatTableDepth == 0xff)
        }
    }

    @Test func cacheHitsOnlyTheTableItHolds() throws {
        let cache = try #require(Qcow2L2Cache(bytes: 4 * 512, tableBytes: 512))
        #expect(cache.slotCount == 4)
        var table = [UInt64](repeating: 0, count: 64)
        for i in 0..<64 { table[i] = (UInt64(i) << 16 | 7).bigEndian }
        #expect(cache.entry(l1Index: 3, index: 5) == nil)
        table.withUnsafeBytes { cache.insert(l1Index: 3, table: $0.baseAddress!, loadedAt: 0) }
        #expect(cache.entry(l1Index: 3, index: 5) == 5 << 16 | 7)
        #expect(cache.entry(l1Index: 4, index: 5) == nil)
        // Filling more tables than the set holds evicts some; what is still there is right.
        for l1 in 10..<30 as Range<UInt64> {
            var other = table
            for i in 0..<64 { other[i] = (l1 << 32 | UInt64(i)).bigEndian }
            other.withUnsafeBytes { cache.insert(l1Index: l1, table: $0.baseAddress!, loadedAt: 0) }
        }
        for l1 in 10..<30 as Range<UInt64> {
            if let value = cache.entry(l1Index: l1, index: 9) { #expect(value == l1 << 32 | 9) }
        }
        #expect(cache.entry(l1Index: 29, index: 63) == 29 << 32 | 63)
    }

    /// The write path's rules: an allocation's new entries reach every cached copy of their
    /// table, and a table read before an allocation changed it is not cached afterwards.
    @Test func updatesReachCachedTablesAndStaleLoadsAreDropped() throws {
        let cache = try #require(Qcow2L2Cache(bytes: 4 * 512, tableBytes: 512))
        let table = [UInt64](repeating: 0, count: 64)
        let loadedAt = cache.generation.load(ordering: .sequentiallyConsistent)
        table.withUnsafeBytes { cache.insert(l1Index: 2, table: $0.baseAddress!, loadedAt: loadedAt) }
        #expect(cache.entry(l1Index: 2, index: 7) == 0)
        var entries: [UInt64] = [(1 << 63 | 0x9_0000).bigEndian, (1 << 63 | 0xa_0000).bigEndian]
        entries.withUnsafeBytes { cache.update(l1Index: 2, first: 7, count: 2, from: $0.baseAddress!) }
        #expect(cache.entry(l1Index: 2, index: 7) == UInt64(1) << 63 | 0x9_0000)
        #expect(cache.entry(l1Index: 2, index: 8) == UInt64(1) << 63 | 0xa_0000)
        #expect(cache.entry(l1Index: 2, index: 9) == 0)
        // Another table read before that update (the old generation): not inserted.
        table.withUnsafeBytes { cache.insert(l1Index: 5, table: $0.baseAddress!, loadedAt: loadedAt) }
        #expect(cache.entry(l1Index: 5, index: 0) == nil)
        entries[0] = 0
        let now = cache.generation.load(ordering: .sequentiallyConsistent)
        table.withUnsafeBytes { cache.insert(l1Index: 5, table: $0.baseAddress!, loadedAt: now) }
        #expect(cache.entry(l1Index: 5, index: 0) == 0)
    }
}
