import BlockIO
import Glibc
import IOThreads
import Testing

@Suite struct DirtyBitmapTests {
    @Test func marksWholeGranulesAndClipsAtTheEnd() {
        let bitmap = DirtyBitmap(length: 10 * 4096 + 100, granularity: 4096)
        #expect(bitmap.bitCount == 11)
        bitmap.markDirty(offset: 4095, length: 2)  // straddles granules 0 and 1
        #expect(bitmap.dirtyCount == 2)
        bitmap.markDirty(offset: 10 * 4096, length: 1 << 40)  // past the end: only the last granule
        #expect(bitmap.dirtyCount == 3)
        bitmap.markDirty(offset: UInt64.max - 10, length: 100)  // overflowing range: ignored safely
        #expect(bitmap.dirtyCount == 3)
        bitmap.markDirty(offset: 0, length: 0)
        #expect(bitmap.dirtyCount == 3)
    }

    @Test func takeRunClearsContiguousRunsFromTheCursorAndWraps() {
        let bitmap = DirtyBitmap(length: 200 * 512, granularity: 512)
        bitmap.markDirty(offset: 10 * 512, length: 5 * 512)   // bits 10...14
        bitmap.markDirty(offset: 130 * 512, length: 512)      // bit 130 (third word)
        let first = bitmap.takeRun(from: 12, maxBits: 100)
        #expect(first?.first == 12 && first?.count == 3)
        let second = bitmap.takeRun(from: 15, maxBits: 100)
        #expect(second?.first == 130 && second?.count == 1)
        let wrapped = bitmap.takeRun(from: 131, maxBits: 1)
        #expect(wrapped?.first == 10 && wrapped?.count == 1)
        #expect(bitmap.dirtyCount == 1)
        _ = bitmap.takeRun(from: 0, maxBits: 10)
        #expect(bitmap.takeRun(from: 0, maxBits: 10) == nil)
        bitmap.markAll()
        #expect(bitmap.dirtyCount == 200)
    }
}

/// The filter over two null-co data paths (they complete at submit, so no ring is needed).
@Suite struct MirrorFilterTests {
    private func request(_ operation: BlockOperation, offset: UInt64, length: UInt64) -> UnsafeMutablePointer<BlockRequest> {
        let request = UnsafeMutablePointer<BlockRequest>.allocate(capacity: 1)
        request.initialize(to: BlockRequest())
        request.pointee.operation = operation
        request.pointee.offset = offset
        request.pointee.length = length
        return request
    }

    @Test func guestWritesAreTrackedAndReadsAreNot() throws {
        let context = try IOContext(entries: 4)
        let bitmap = DirtyBitmap(length: 1 << 20, granularity: 64 << 10)
        let filter = MirrorFilterIO(source: NullIO(length: 1 << 20, readZeroes: true, writable: true),
                                    target: NullIO(length: 1 << 20, readZeroes: true, writable: true), bitmap: bitmap)
        let read = request(.read, offset: 0, length: 4096)
        #expect(filter.submit(read, on: context) == .done(4096))
        #expect(bitmap.dirtyCount == 0)
        let write = request(.write, offset: 128 << 10, length: 4096)
        #expect(filter.submit(write, on: context) == .done(4096))
        let zeroes = request(.writeZeroes, offset: 512 << 10, length: 128 << 10)
        #expect(filter.submit(zeroes, on: context) == .done(0))
        let discard = request(.discard, offset: 1000 << 10, length: 4096)
        #expect(filter.submit(discard, on: context) == .done(0))
        #expect(bitmap.dirtyCount == 1 + 2 + 1)
        // After the first pass: writes also go to the target, still complete with the
        // guest's byte count, and need no copy...
        while bitmap.takeRun(from: 0, maxBits: 100) != nil {}
        #expect(bitmap.dirtyCount == 0)
        filter.startWritingThrough()
        #expect(filter.submit(write, on: context) == .done(4096))
        #expect(filter.targetErrno == 0)
        #expect(bitmap.dirtyCount == 0)
        // ...unless the copier is copying that very range (its read may predate the write).
        filter.copying(first: 2, count: 1)
        #expect(filter.submit(write, on: context) == .done(4096))
        #expect(bitmap.dirtyCount == 1)
        filter.copyDone()
        for r in [read, write, zeroes, discard] { r.deallocate() }
    }

    @Test func aFailingTargetNeverFailsTheGuestWrite() throws {
        let context = try IOContext(entries: 4)
        let bitmap = DirtyBitmap(length: 1 << 20, granularity: 64 << 10)
        let filter = MirrorFilterIO(source: NullIO(length: 1 << 20, readZeroes: true, writable: true),
                                    target: FailingIO(), bitmap: bitmap)
        filter.startWritingThrough()
        let write = request(.write, offset: 0, length: 4096)
        #expect(filter.submit(write, on: context) == .done(4096))
        #expect(filter.targetErrno == ENOSPC)
        #expect(bitmap.dirtyCount == 1)
        write.deallocate()
    }
}

/// A data path whose every request fails with ENOSPC.
final class FailingIO: BlockDriverIO {
    var length: UInt64 { 1 << 20 }
    var writable: Bool { true }
    func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult { .done(-ENOSPC) }
    func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? { result }
}
