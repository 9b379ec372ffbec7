#if canImport(Glibc)
import Glibc
#endif
import SpindleTestSupport
import Testing
@testable import VhostUser

/// A packed buffer longer than the chain it is taken into: the take throws `.tooManySpans`
/// and leaves the ring (and the inflight region) exactly as they were, so that the server
/// takes the same buffer again into a borrowed span block. Across the ring's end at odd
/// sizes, direct and indirect, and for buffers a previous process left in flight.
@Suite struct PackedLongTakeTests {
    static let data: UInt64 = 0x10000

    static func buffers(id: UInt16, count: Int) -> [(gpa: UInt64, length: UInt32, writable: Bool)] {
        (0..<count).map { (data + 0x1000 * UInt64(id) + 0x20 * UInt64($0), 16 + UInt32($0), $0 == count - 1) }
    }

    static func takeError(_ ring: inout PackedVirtqueue, into chain: DescriptorChain) -> VirtqueueError? {
        failure { () throws(VirtqueueError) in _ = try ring.takeAvailable(into: chain) }
    }

    /// Four laps of rings of 5 and 7 entries with chains of 3 and 4 descriptors (straddling
    /// the end) and indirect tables of 6 entries: each first fails into a 2-span chain with
    /// the ring unchanged (same base, nothing in flight, not broken), then is taken whole.
    @Test(arguments: [5, 7])
    func tooLongATakeLeavesTheRingForASecondTake(size: Int) throws {
        let driver = MockPackedQueue(size: size)
        var ring = try driver.queue(features: .indirectDescriptors)
        let short = DescriptorChain(capacity: 2)
        let long = DescriptorChain(capacity: 8)
        for round in 0..<(4 * size) {
            let id = UInt16(round % size)
            let indirect = round % 3 == 2
            let count = indirect ? 6 : 3 + round % 2
            if indirect {
                driver.offerIndirect(table: 0x80000 + 0x100 * UInt64(id), entries: Self.buffers(id: id, count: count), id: id)
            } else {
                driver.offer(Self.buffers(id: id, count: count), id: id)
            }
            let before = ring.base
            #expect(Self.takeError(&ring, into: short) == .tooManySpans(capacity: 2))
            #expect(ring.base == before && ring.inFlight == 0 && !ring.isBroken)
            #expect(short.readableSpanCount == 0 && short.writableSpanCount == 0 && short.writableLength == 0)
            #expect(try ring.takeAvailable(into: long) == id)
            #expect(long.readableSpanCount == count - 1 && long.writableSpanCount == 1)
            #expect(long.spanLengths(writable: true) == [16 + count - 1])
            ring.pushUsed(head: id, writtenLength: 1)
            #expect(driver.takeUsed()?.id == id)
        }
        #expect(ring.base == PackedVringBase(availablePosition: UInt16(driver.nextAvailable), availableWrap: driver.availableWrap,
                                             usedPosition: UInt16(driver.nextUsed), usedWrap: driver.usedWrap))
    }

    /// Errors other than running out of spans still break the ring, also when found after
    /// the short chain's failure (a chain longer than the ring, seen with room enough).
    @Test func chainLongerThanTheRingStillBreaksIt() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        for position in 0..<3 {
            driver.setDescriptor(position, address: Self.data + 0x20 * UInt64(position), length: 16, id: 0,
                                 flags: MockPackedQueue.availableFlags(wrap: true) | 1 | 2)
        }
        #expect(Self.takeError(&ring, into: DescriptorChain(capacity: 2)) == .tooManySpans(capacity: 2))
        #expect(!ring.isBroken)
        #expect(Self.takeError(&ring, into: DescriptorChain(capacity: 8)) == .chainTooLong(tableSize: 3))
        #expect(ring.isBroken)
    }

    /// With an inflight region: a resubmitted buffer (from its copy) and a new one, each too
    /// long for the first chain, come again on the next take; each is tracked once, and after
    /// both are used a third process finds nothing in flight.
    @Test func trackedTakeTooLongComesAgain() throws {
        let driver = MockPackedQueue(size: 8)
        let (fd, description) = try InflightBuffer.allocate(queues: 1, queueSize: 8)
        defer { close(fd) }
        let buffer = try InflightBuffer(fd: fd, description: description, maxQueues: 1)
        do {
            var ring = try driver.queue()
            let first = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
            driver.offer(Self.buffers(id: 6, count: 3), id: 6)
            #expect(try first.nextID(from: &ring) == 6)  // in flight when the process dies
        }
        driver.offer(Self.buffers(id: 2, count: 4), id: 2)
        var ring = try PackedVirtqueue(memory: driver.memory, size: 8, addresses: driver.addresses, features: [])
        let second = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
        #expect(second.recoveredCount == 1)
        let short = DescriptorChain(capacity: 2)
        let long = DescriptorChain(capacity: 8)
        for (id, count) in [(UInt16(6), 3), (UInt16(2), 4)] {
            let error = failure { () throws(VirtqueueError) in _ = try second.nextID(from: &ring, into: short) }
            #expect(error == .tooManySpans(capacity: 2))
            #expect(!ring.isBroken)
            #expect(try second.nextID(from: &ring, into: long) == id)
            #expect(long.readableSpanCount + long.writableSpanCount == count)
        }
        #expect(try second.nextID(from: &ring, into: long) == nil)
        ring.addUsed(head: 2, writtenLength: 1)
        ring.addUsed(head: 6, writtenLength: 1)
        second.publishUsed(&ring)
        var ids: [UInt16] = []
        while let used = driver.takeUsed() { ids.append(used.id) }
        #expect(ids == [2, 6])
        var third = try PackedVirtqueue(memory: driver.memory, size: 8, addresses: driver.addresses, features: [])
        #expect(try PackedInflightTracker(buffer: buffer, queue: 0, ring: &third).recoveredCount == 0)
    }
}
