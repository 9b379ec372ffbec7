#if canImport(Glibc)
import Glibc
#endif
import SpindleTestSupport
import Testing
@testable import VhostUser

/// The inflight region (INFLIGHT_SHMFD) on a fake guest's ring: marking, the publish order,
/// and recovery by a "new process" (a fresh tracker over the same buffer) after a crash.
@Suite struct InflightTrackerTests {
    /// A GET_INFLIGHT_FD buffer for one queue of 16, mapped as SET_INFLIGHT_FD would.
    static func buffer(queues: Int = 1, size: Int = 16) throws -> InflightBuffer {
        let (fd, description) = try InflightBuffer.allocate(queues: queues, queueSize: size)
        defer { close(fd) }
        return try InflightBuffer(fd: fd, description: description, maxQueues: queues)
    }

    static func inflightFlag(_ buffer: InflightBuffer, _ head: Int) -> UInt8 {
        buffer.base.load(fromByteOffset: 16 + 16 * head, as: UInt8.self)
    }

    static func header(_ buffer: InflightBuffer, _ offset: Int) -> UInt16 {
        buffer.base.load(fromByteOffset: offset, as: UInt16.self)
    }

    @Test func freshRegionIsInitialisedAndMarksFollowThePublishOrder() throws {
        let guest = MockSplitQueue()
        let buffer = try Self.buffer()
        var ring = try guest.queue()
        let tracker = try InflightTracker(buffer: buffer, queue: 0, ring: &ring)
        #expect(Self.header(buffer, 8) == 1)   // version
        #expect(Self.header(buffer, 10) == 16) // desc_num
        #expect(tracker.recoveredCount == 0)

        guest.offer(2, 5, 7)
        #expect(try tracker.nextHead(from: &ring) == 2)
        #expect(try tracker.nextHead(from: &ring) == 5)
        #expect(try tracker.nextHead(from: &ring) == 7)
        #expect(Self.inflightFlag(buffer, 2) == 1 && Self.inflightFlag(buffer, 5) == 1 && Self.inflightFlag(buffer, 7) == 1)
        let counter2 = buffer.base.load(fromByteOffset: 16 + 16 * 2 + 8, as: UInt64.self)
        let counter5 = buffer.base.load(fromByteOffset: 16 + 16 * 5 + 8, as: UInt64.self)
        #expect(counter2 < counter5)

        // Completed out of order, as one batch: 7 then 2.
        ring.addUsed(head: 7, writtenLength: 1)
        ring.addUsed(head: 2, writtenLength: 1)
        // Not published yet: still marked.
        #expect(Self.inflightFlag(buffer, 7) == 1)
        tracker.publishUsed(&ring)
        #expect(guest.usedIndex == 2)
        #expect(Self.inflightFlag(buffer, 7) == 0 && Self.inflightFlag(buffer, 2) == 0)
        #expect(Self.inflightFlag(buffer, 5) == 1)
        #expect(Self.header(buffer, 12) == 2)  // last_batch_head
        #expect(Self.header(buffer, 14) == 2)  // used_idx
    }

    @Test func newProcessResubmitsExactlyTheUnfinishedRequestsInTakeOrder() throws {
        let guest = MockSplitQueue()
        let buffer = try Self.buffer()
        do {
            var ring = try guest.queue()
            let first = try InflightTracker(buffer: buffer, queue: 0, ring: &ring)
            guest.offer(6, 1, 4, 9)
            for _ in 0..<4 { _ = try first.nextHead(from: &ring) }
            ring.addUsed(head: 1, writtenLength: 1)   // only the second one finished
            first.publishUsed(&ring)
            guest.offer(3)                            // the driver queued more meanwhile
        }
        // The frontend rewinds to used.idx (1) after the crash; the region knows better.
        var ring = try guest.queue(lastAvailable: guest.usedIndex)
        let second = try InflightTracker(buffer: buffer, queue: 0, ring: &ring)
        #expect(second.recoveredCount == 3)
        #expect(ring.lastAvailableIndex == 4)
        var taken: [UInt16] = []
        while let head = try second.nextHead(from: &ring) { taken.append(head) }
        #expect(taken == [6, 4, 9, 3])   // resubmissions in the order first taken, then new work
        for head in taken { ring.addUsed(head: head, writtenLength: 1) }
        second.publishUsed(&ring)
        // Each request completed exactly once over both processes.
        let completed = (0..<Int(guest.usedIndex)).map { guest.usedElement($0).id }
        #expect(completed.sorted() == [1, 3, 4, 6, 9])
        for head in 0..<16 { #expect(Self.inflightFlag(buffer, head) == 0) }
    }

    @Test func crashBetweenPublishingAndClearingIsRepaired() throws {
        let guest = MockSplitQueue()
        let buffer = try Self.buffer()
        do {
            var ring = try guest.queue()
            let first = try InflightTracker(buffer: buffer, queue: 0, ring: &ring)
            guest.offer(3, 8, 11)
            for _ in 0..<3 { _ = try first.nextHead(from: &ring) }
            // A batch of two published, then the process "dies" before clearing its marks.
            ring.addUsed(head: 11, writtenLength: 1)
            ring.addUsed(head: 3, writtenLength: 1)
            ring.publishUsed()
        }
        #expect(Self.inflightFlag(buffer, 11) == 1 && Self.inflightFlag(buffer, 3) == 1)
        var ring = try guest.queue(lastAvailable: guest.usedIndex)
        let second = try InflightTracker(buffer: buffer, queue: 0, ring: &ring)
        #expect(second.recoveredCount == 1)         // only 8: 11 and 3 are in the used ring
        #expect(try second.nextHead(from: &ring) == 8)
        #expect(try second.nextHead(from: &ring) == nil)
        #expect(Self.header(buffer, 14) == 2)
    }

    @Test func rejectsRegionsThatDoNotFitTheQueue() throws {
        let guest = MockSplitQueue()
        let small = try Self.buffer(size: 8)
        var ring = try guest.queue()
        #expect(throws: InflightError.self) { try InflightTracker(buffer: small, queue: 0, ring: &ring) }
        let one = try Self.buffer()
        #expect(throws: InflightError.self) { try InflightTracker(buffer: one, queue: 1, ring: &ring) }
        // A region claiming another size, an unknown version, a used_idx more than a ring away.
        let buffer = try Self.buffer()
        _ = try InflightTracker(buffer: buffer, queue: 0, ring: &ring)
        buffer.base.storeBytes(of: UInt16(32), toByteOffset: 10, as: UInt16.self)
        #expect(throws: InflightError.self) { try InflightTracker(buffer: buffer, queue: 0, ring: &ring) }
        buffer.base.storeBytes(of: UInt16(16), toByteOffset: 10, as: UInt16.self)
        buffer.base.storeBytes(of: UInt16(7), toByteOffset: 8, as: UInt16.self)
        #expect(throws: InflightError.self) { try InflightTracker(buffer: buffer, queue: 0, ring: &ring) }
        buffer.base.storeBytes(of: UInt16(1), toByteOffset: 8, as: UInt16.self)
        buffer.base.storeBytes(of: UInt16(100), toByteOffset: 14, as: UInt16.self)
        #expect(throws: InflightError.self) { try InflightTracker(buffer: buffer, queue: 0, ring: &ring) }
    }

    @Test func hostileBufferDescriptionsAreRefused() throws {
        let (fd, description) = try InflightBuffer.allocate(queues: 2, queueSize: 16)
        defer { close(fd) }
        var d = description
        d.numQueues = 4   // more queues than the device has
        #expect(throws: InflightError.self) { try InflightBuffer(fd: fd, description: d, maxQueues: 2) }
        d = description
        d.queueSize = 24  // not a power of two
        #expect(throws: InflightError.self) { try InflightBuffer(fd: fd, description: d, maxQueues: 2) }
        d = description
        d.mmapSize = 64   // too small for the queues it claims
        #expect(throws: InflightError.self) { try InflightBuffer(fd: fd, description: d, maxQueues: 2) }
        d = description
        d.mmapOffset = 4096  // the file ends before the region would: SIGBUS if mapped
        #expect(throws: InflightError.self) { try InflightBuffer(fd: fd, description: d, maxQueues: 2) }
        d = description
        d.mmapOffset = 100   // not page aligned
        #expect(throws: InflightError.self) { try InflightBuffer(fd: fd, description: d, maxQueues: 2) }
        _ = try InflightBuffer(fd: fd, description: description, maxQueues: 2)
        // Sealed: the frontend cannot shrink it under the mapping.
        #expect(ftruncate(fd, 0) != 0)
        // A file that could be shrunk under the mapping is refused.
        let unsealable = memfd_create("not-sealable", UInt32(MFD_CLOEXEC))
        defer { close(unsealable) }
        #expect(ftruncate(unsealable, off_t(description.mmapSize)) == 0)
        #expect(throws: InflightError.self) { try InflightBuffer(fd: unsealable, description: description, maxQueues: 2) }
    }
}
