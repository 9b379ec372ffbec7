import SpindleTestSupport
import Testing
@testable import VhostUser

/// A hostile or broken driver on a packed ring: each case is a `VirtqueueError`, never a
/// crash or a read outside guest memory, and a ring that reported one hands out no more work.
@Suite struct PackedVirtqueueHostileTests {
    static let data: UInt64 = 0x10000

    /// popAvailable's error, and that the ring then stays quiet.
    func expectPopError(_ ring: inout PackedVirtqueue, _ expected: VirtqueueError) {
        do { let error = failure { () throws(VirtqueueError) in _ = try ring.popAvailable() }; #expect(error == expected) }
        #expect(ring.isBroken)
        #expect((try? ring.popAvailable()) == nil)
        #expect((try? ring.availableCount()) == 0)
    }

    @Test func idOutOfRange() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false)], id: 7)
        expectPopError(&ring, .bufferIdOutOfRange(id: 7, queueSize: 7))
    }

    @Test func idReusedWhileInFlight() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false)], id: 2)
        driver.offer([(Self.data, 16, false), (Self.data, 16, true)], id: 2)
        #expect(try ring.popAvailable() == 2)
        expectPopError(&ring, .bufferIdInUse(id: 2))
    }

    /// Every descriptor says NEXT: the walk stops after the ring's worth.
    @Test func chainLongerThanTheRing() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        let flags = MockPackedQueue.availableFlags(wrap: true) | 1
        for i in 0..<3 { driver.setDescriptor(i, address: Self.data, length: 16, id: 0, flags: flags) }
        expectPopError(&ring, .chainTooLong(tableSize: 3))
    }

    /// AVAIL flipped to the wrap counter with USED flipped too: what only a used descriptor
    /// of this lap looks like.
    @Test func wrapCounterConfusion() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        driver.setDescriptor(0, address: Self.data, length: 16, id: 0, flags: 0x8080)
        expectPopError(&ring, .availableFlagWithoutBuffer(position: 0, flags: 0x8080))
    }

    @Test func wrapConfusionSeenByPolling() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        driver.setDescriptor(0, address: Self.data, length: 16, id: 0, flags: 0x8080)
        let kicksWanted = ring.enableGuestKicks()
        #expect(kicksWanted, "looks like work, so that popAvailable reports it")
        do { let error = failure { () throws(VirtqueueError) in _ = try ring.availableCount() }; #expect(error == VirtqueueError.availableFlagWithoutBuffer(position: 0, flags: 0x8080)) }
        #expect(ring.isBroken)
    }

    /// A descriptor of the previous lap (AVAIL at the old wrap counter) is simply not
    /// available: a driver that never wrote it is not an error.
    @Test func previousLapIsNotAvailable() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        driver.setDescriptor(0, address: Self.data, length: 16, id: 0, flags: MockPackedQueue.availableFlags(wrap: false))
        #expect(try ring.popAvailable() == nil)
        #expect(!ring.isBroken)
    }

    @Test func indirectInIndirect() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offerIndirect(table: 0x9000, entries: [(Self.data, 16, false), (0x9000, 32, false)], id: 0, entryFlags: 0)
        driver.setDescriptor(1, address: 0x9000, length: 32, id: 0, flags: 4, table: 0x9000)
        let id = try #require(try ring.popAvailable())
        let chain = DescriptorChain(capacity: 8)
        do { let error = failure { () throws(VirtqueueError) in _ = try ring.readChain(head: id, into: chain) }; #expect(error == VirtqueueError.nestedIndirect) }
        #expect(chain.readableSpanCount == 0)
    }

    @Test func indirectInAChain() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offer([(Self.data, 16, false), (0x9000, 16, false)], id: 0)
        driver.setFlags(driver.flags(at: 1) | 4, at: 1)
        expectPopError(&ring, .indirectInChain)
    }

    @Test func indirectWithNext() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offerIndirect(table: 0x9000, entries: [(Self.data, 16, false)], id: 0, extraFlags: 1)
        expectPopError(&ring, .indirectWithNext)
    }

    @Test(arguments: [0, 24, 16 * 32769] as [UInt32])
    func badIndirectTableLength(length: UInt32) throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offerIndirect(table: 0x9000, entries: [(Self.data, 16, false)], id: 0, tableLength: length)
        let id = try #require(try ring.popAvailable())
        do {
            let error = failure { () throws(VirtqueueError) in _ = try ring.readChain(head: id, into: DescriptorChain(capacity: 4)) }
            #expect(error == VirtqueueError.invalidIndirectTableLength(length))
        }
    }

    @Test func indirectWithoutTheFeature() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offerIndirect(table: 0x9000, entries: [(Self.data, 16, false)], id: 0)
        let id = try #require(try ring.popAvailable())
        do { let error = failure { () throws(VirtqueueError) in _ = try ring.readChain(head: id, into: DescriptorChain(capacity: 4)) }; #expect(error == VirtqueueError.indirectNotNegotiated) }
    }

    @Test func indirectTableOutsideMemory() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offerIndirect(table: 0xFFFF0, entries: [], id: 0, tableLength: 32)
        let id = try #require(try ring.popAvailable())
        do {
            let error = failure { () throws(VirtqueueError) in _ = try ring.readChain(head: id, into: DescriptorChain(capacity: 4)) }
            #expect(error == VirtqueueError.indirectTableNotMapped(address: 0xFFFF0, length: 32))
        }
    }

    @Test func bufferOutsideMemory() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false), (0xFFF00, 0x200, true)], id: 0)
        let id = try #require(try ring.popAvailable())
        do {
            let error = failure { () throws(VirtqueueError) in _ = try ring.readChain(head: id, into: DescriptorChain(capacity: 4)) }
            #expect(error == VirtqueueError.bufferNotMapped(address: 0xFFF00, length: 0x200))
        }
        driver.offer([(UInt64.max - 8, 16, false)], id: 1)
        let second = try #require(try ring.popAvailable())
        do {
            let error = failure { () throws(VirtqueueError) in _ = try ring.readChain(head: second, into: DescriptorChain(capacity: 4)) }
            #expect(error == VirtqueueError.bufferAddressWraps(address: UInt64.max - 8, length: 16))
        }
    }

    @Test func readableAfterWritable() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, true), (Self.data, 16, false)], id: 0)
        let id = try #require(try ring.popAvailable())
        do { let error = failure { () throws(VirtqueueError) in _ = try ring.readChain(head: id, into: DescriptorChain(capacity: 4)) }; #expect(error == VirtqueueError.readableAfterWritable) }
    }

    /// The driver rewrites a taken chain's NEXT flags to make it look longer: the walk still
    /// reads only the descriptors counted when the buffer was taken.
    @Test func chainRewrittenAfterTaking() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false), (Self.data + 0x100, 8, true)], id: 0)
        let id = try #require(try ring.popAvailable())
        driver.setFlags(driver.flags(at: 1) | 1, at: 1)
        driver.setDescriptor(2, address: 0xFFF00, length: 0x200, id: 0, flags: 0x80 | 2)
        let chain = DescriptorChain(capacity: 4)
        try ring.readChain(head: id, into: chain)
        #expect(chain.readableLength == 16 && chain.writableLength == 8)
    }

    /// A completion for an id that is not in flight (it cannot come from the server, which
    /// only completes what it took) writes nothing.
    @Test func usedForAnIdNotInFlight() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        ring.addUsed(head: 3, writtenLength: 1)
        ring.addUsed(head: 900, writtenLength: 1)
        ring.publishUsed()
        #expect(driver.takeUsed() == nil)
        #expect(ring.base == .initial)
    }
}

/// The error `body` threw, or nil (a helper: `#expect(throws:)` cannot call mutating methods
/// of an inout ring).
func failure(_ body: () throws(VirtqueueError) -> Void) -> VirtqueueError? {
    do {
        try body()
        return nil
    } catch {
        return error
    }
}
