import CSpindle
import Glibc
import SpindleTestSupport
import Testing
@testable import VhostUser

/// A bitmap in test memory, zeroed, `words` u64 long.
final class TestLog {
    let words: UnsafeMutablePointer<UInt64>
    let bitmap: DirtyLogBitmap
    init(words count: Int = 4) {
        words = .allocate(capacity: count)
        words.initialize(repeating: 0, count: count)
        bitmap = DirtyLogBitmap(words: words, wordCount: count)
    }
    deinit { words.deallocate() }
    /// The pages whose bits are set, in order.
    var markedPages: [UInt64] {
        (0..<UInt64(bitmap.wordCount * 64)).filter { page in
            let byte = UnsafeRawPointer(words).load(fromByteOffset: Int(page >> 3), as: UInt8.self)
            return byte & (1 << UInt8(page & 7)) != 0
        }
    }
}

/// The dirty log's arithmetic (vhost-user "Migration": bit `gpa >> 12`, byte `page >> 3`,
/// bit `page & 7`), the used-ring offsets, host spans translated back to guest pages, and
/// mapping a log from a memfd with bad sizes and offsets refused.
@Suite struct DirtyLogTests {
    @Test func marksThePageOfEachByte() {
        let log = TestLog()
        #expect(log.bitmap.mark(gpa: 0, length: 1) == 0)
        #expect(log.bitmap.mark(gpa: 0x5fff, length: 1) == 0)  // last byte of page 5
        #expect(log.bitmap.mark(gpa: 9 << 12 | 0x123, length: 2) == 0)
        #expect(log.markedPages == [0, 5, 9])
        // Byte page >> 3, bit page & 7.
        let bytes = UnsafeRawPointer(log.words)
        #expect(bytes.load(fromByteOffset: 0, as: UInt8.self) == 0b0010_0001)
        #expect(bytes.load(fromByteOffset: 1, as: UInt8.self) == 0b0000_0010)
        #expect(log.bitmap.isMarked(gpa: 0x5000) && !log.bitmap.isMarked(gpa: 0x6000))
    }

    @Test func aBufferSpanningPagesMarksEachOfThem() {
        let log = TestLog()
        _ = log.bitmap.mark(gpa: 0x3ff8, length: 16)  // crosses from page 3 into 4
        #expect(log.markedPages == [3, 4])
        let across = TestLog()
        _ = across.bitmap.mark(gpa: 62 << 12, length: 3 << 12)  // pages 62, 63 | 64: two words
        #expect(across.markedPages == [62, 63, 64])
        let whole = TestLog()
        _ = whole.bitmap.mark(gpa: 64 << 12, length: 64 << 12)  // exactly word 1
        #expect(whole.words[0] == 0 && whole.words[1] == .max && whole.words[2] == 0)
        let empty = TestLog()
        #expect(empty.bitmap.mark(gpa: 0x1000, length: 0) == 0)
        #expect(empty.markedPages.isEmpty)
    }

    @Test func pagesBeyondTheLogAreCountedNotWritten() {
        let log = TestLog(words: 1)  // 64 pages: 256 KiB
        #expect(log.bitmap.coveredBytes == 256 << 10)
        #expect(log.bitmap.mark(gpa: 63 << 12, length: 3 << 12) == 2)  // 63 in, 64 and 65 out
        #expect(log.markedPages == [63])
        #expect(log.bitmap.mark(gpa: 1 << 40, length: 4096) == 1)
        // A range running past 2^64 is cut there, never wraps around to page 0.
        #expect(log.bitmap.mark(gpa: UInt64.max - 10, length: 100) == 1)
        #expect(log.markedPages == [63])
        #expect(!log.bitmap.isMarked(gpa: 1 << 40))
    }

    /// Split ring, logged at `log_guest_addr`: flags at 0, idx at 2, element i at 4 + 8i,
    /// avail_event at 4 + 8 * num. A 1024-entry used ring spans three pages here.
    @Test func usedRingOffsets() throws {
        let guest = MockSplitQueue(regions: [(0, 0x100000)], uvaBias: 0, size: 1024,
                                   descriptorTable: 0x10000, availableRing: 0x20000, usedRing: 0x30000)
        var ring = try guest.queue()
        // Not the ring's own address (the frontend's choice): element i at 0x80ff8 + 8i.
        let logAddress: UInt64 = 0x80ff4
        let log = TestLog(words: 4)
        ring.beginUsedRingLog()
        #expect(ring.logPublishedUsed(at: logAddress, in: log.bitmap) == 0)
        #expect(log.markedPages.isEmpty, "nothing published, nothing marked")
        // Element 0 at 0x80ff8 and idx at 0x80ff6: page 0x80.
        ring.pushUsed(head: 0, writtenLength: 1)
        #expect(ring.logPublishedUsed(at: logAddress, in: log.bitmap) == 0)
        #expect(log.markedPages == [0x80])
        // Elements 1...600: page 0x81 from i = 1, 0x82 from i = 513; idx on 0x80.
        for head in 1...600 { ring.addUsed(head: UInt16(head % 1024), writtenLength: 1) }
        ring.publishUsed()
        let second = TestLog(words: 4)
        _ = ring.logPublishedUsed(at: logAddress, in: second.bitmap)
        #expect(second.markedPages == [0x80, 0x81, 0x82])
        let third = TestLog(words: 4)
        for head in 601...1023 { ring.addUsed(head: UInt16(head), writtenLength: 1) }
        ring.publishUsed()
        ring.beginUsedRingLog()
        ring.pushUsed(head: 0, writtenLength: 1)  // element 1024 % 1024 = 0: wraps to the start
        _ = ring.logPublishedUsed(at: logAddress, in: third.bitmap)
        #expect(third.markedPages == [0x80])  // element 0 and idx
        // The whole device area at stop: up to avail_event at +4 + 8 * 1024 (0x82ff8).
        let whole = TestLog(words: 4)
        #expect(ring.logDeviceArea(at: logAddress, in: whole.bitmap) == 0)
        #expect(whole.markedPages == [0x80, 0x81, 0x82])
        let justAvailEvent = TestLog(words: 4)
        _ = justAvailEvent.bitmap.mark(gpa: logAddress + 4 + 8 * 1024, length: 2)
        #expect(justAvailEvent.markedPages == [0x82])
    }

    /// Host spans are translated back through the table: a buffer crossing from region A into
    /// the adjacent region B (two spans) marks the guest pages of both, not host addresses.
    @Test func writableSpansMarkTheirGuestPagesAcrossRegions() throws {
        let guest = MockSplitQueue()  // A: 0-0x10000, B: 0x10000-0x20000, C: 0x100000-
        let chain = try guest.chain([(0x5000, 16, false), (0xf800, 0x1000, true), (0x100ffc, 8, true)])
        #expect(chain.writableSpanCount == 3)  // 0xf800 is cut at A's end
        let log = TestLog(words: 8)
        #expect(guest.memory.markDirty(spans: chain.writableSpans, in: log.bitmap) == 0)
        #expect(log.markedPages == [0xf, 0x10, 0x100, 0x101])
        var ring = try guest.queue()
        let again = TestLog(words: 8)
        #expect(ring.logWritableBuffers(of: chain, in: again.bitmap) == 0)
        #expect(again.markedPages == log.markedPages)
        // A span that is not guest memory is not marked (counted).
        let stray = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
        defer { stray.deallocate() }
        var spans = [iovec(iov_base: stray, iov_len: 16)]
        let missed = spans.withUnsafeMutableBufferPointer { guest.memory.markDirty(spans: $0, in: log.bitmap) }
        #expect(missed == 1)
    }

    // MARK: mapping the frontend's log

    private static func memfd(_ size: Int) -> Int32 {
        let fd = memfd_create("vhost-log-test", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        precondition(fd >= 0 && ftruncate(fd, off_t(size)) == 0)
        return fd
    }

    @Test func mapsALogSharedWithTheFrontend() throws {
        let fd = Self.memfd(4096)
        defer { close(fd) }
        let log = try DirtyLog.map(VhostUserLogDescription(mmapSize: 4096, mmapOffset: 0), fd: fd)
        #expect(log.bitmap.wordCount == 512)
        _ = log.bitmap.mark(gpa: 0x7000, length: 1)  // page 7: byte 0, bit 7
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, 0) == 1)
        #expect(byte == 0x80, "the frontend sees the bit through its own fd")
    }

    @Test(arguments: [
        (UInt64(0), UInt64(0), DirtyLogError.invalidSize(0)),
        (12, 0, .invalidSize(12)),
        (DirtyLog.maximumSize + 8, 0, .invalidSize(DirtyLog.maximumSize + 8)),
        (4096, 4, .invalidOffset(4, size: 4096)),
        (4096, UInt64.max - 100, .invalidOffset(UInt64.max - 100, size: 4096)),
        (8192, 0, .fileTooShort(needed: 8192, fileSize: 4096)),
        (4096, 4096, .fileTooShort(needed: 8192, fileSize: 4096)),
    ])
    func refusesBadLogs(size: UInt64, offset: UInt64, expected: DirtyLogError) {
        let fd = Self.memfd(4096)
        defer { close(fd) }
        #expect(throws: expected) { try DirtyLog.map(VhostUserLogDescription(mmapSize: size, mmapOffset: offset), fd: fd) }
    }

    @Test func refusesALogWithoutAFileDescriptor() {
        #expect(throws: DirtyLogError.noFileDescriptor) {
            try DirtyLog.map(VhostUserLogDescription(mmapSize: 4096, mmapOffset: 0), fd: nil)
        }
    }

    @Test func mapsAtANonZeroOffset() throws {
        let fd = Self.memfd(3 * 4096)
        defer { close(fd) }
        let log = try DirtyLog.map(VhostUserLogDescription(mmapSize: 8, mmapOffset: 4096 + 16), fd: fd)
        _ = log.bitmap.mark(gpa: 0, length: 1)
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, 4096 + 16) == 1)
        #expect(byte == 1)
    }
}
