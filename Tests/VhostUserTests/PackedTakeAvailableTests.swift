import SpindleTestSupport
import Testing
@testable import VhostUser

/// `takeAvailable(into:)`, the one-walk way the server takes packed buffers: the same spans
/// as the two-step `popAvailable()` + `readChain`, and every hostile case of
/// `PackedVirtqueueHostileTests` reported by the one walk, which then leaves the chain empty
/// and the ring broken.
@Suite struct PackedTakeAvailableTests {
    static let data: UInt64 = 0x10000

    /// Two drivers fed the same buffers (3-descriptor chains straddling the ring's end, and
    /// indirect ones) over several laps of odd-sized rings: both ways give the same id, spans
    /// and lengths, and the rings end at the same base.
    @Test(arguments: [3, 7, 256])
    func sameBufferAsTheTwoStepWay(size: Int) throws {
        let oneWalk = MockPackedQueue(size: size)
        let twoStep = MockPackedQueue(size: size)
        var ring = try oneWalk.queue(features: .indirectDescriptors)
        var reference = try twoStep.queue(features: .indirectDescriptors)
        let chain = DescriptorChain(capacity: 8)
        let expected = DescriptorChain(capacity: 8)
        for round in 0..<(3 * size + 5) {
            let id = UInt16(round % size)
            let out = Self.data + UInt64(round % 64) * 0x1000
            let buffers: [(gpa: UInt64, length: UInt32, writable: Bool)] =
                [(out, 16, false), (out + 0x100, 0, false), (out + 0x800, 512, true), (out + 0xF00, 1, true)]
            for driver in [oneWalk, twoStep] {
                if round % 3 == 2 {
                    driver.offerIndirect(table: 0x80000 + UInt64(round % 8) * 0x100, entries: buffers, id: id)
                } else {
                    driver.offer(Array(buffers.prefix(size >= 4 ? 4 : size)), id: id)
                }
            }
            let taken = try #require(try ring.takeAvailable(into: chain))
            let poppedID = try #require(try reference.popAvailable())
            try reference.readChain(head: poppedID, into: expected)
            #expect(taken == id && poppedID == id && chain.head == id)
            #expect(try ring.takeAvailable(into: chain) == nil)
            #expect(chain.head == id, "an empty ring leaves the chain alone")
            #expect(chain.spanList(oneWalk.guest, writable: false) == expected.spanList(twoStep.guest, writable: false))
            #expect(chain.spanList(oneWalk.guest, writable: true) == expected.spanList(twoStep.guest, writable: true))
            #expect(chain.spanLengths(writable: true) == expected.spanLengths(writable: true))
            #expect(chain.readableLength == expected.readableLength && chain.writableLength == expected.writableLength)
            ring.pushUsed(head: taken, writtenLength: 1)
            reference.pushUsed(head: poppedID, writtenLength: 1)
            #expect(oneWalk.takeUsed()?.id == id)
            #expect(twoStep.takeUsed()?.id == id)
        }
        #expect(ring.base == reference.base)
        #expect(ring.inFlight == 0)
    }

    /// The one walk's error, an empty chain, and a ring that hands out nothing more.
    func expectTakeError(_ ring: inout PackedVirtqueue, _ expected: VirtqueueError, capacity: Int = 4) {
        let chain = DescriptorChain(capacity: capacity)
        do { let error = failure { () throws(VirtqueueError) in _ = try ring.takeAvailable(into: chain) }; #expect(error == expected) }
        #expect(chain.readableSpanCount == 0 && chain.writableSpanCount == 0)
        #expect(chain.readableLength == 0 && chain.writableLength == 0)
        #expect(ring.isBroken)
        #expect((try? ring.takeAvailable(into: chain)) == nil)
        #expect((try? ring.availableCount()) == 0)
    }

    @Test func idOutOfRange() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false), (Self.data + 0x100, 1, true)], id: 7)
        expectTakeError(&ring, .bufferIdOutOfRange(id: 7, queueSize: 7))
    }

    @Test func idReusedWhileInFlight() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false)], id: 2)
        driver.offer([(Self.data, 16, false), (Self.data, 16, true)], id: 2)
        #expect(try ring.takeAvailable(into: DescriptorChain(capacity: 4)) == 2)
        expectTakeError(&ring, .bufferIdInUse(id: 2))
    }

    @Test func chainLongerThanTheRing() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        let flags = MockPackedQueue.availableFlags(wrap: true) | 1
        for i in 0..<3 { driver.setDescriptor(i, address: Self.data, length: 16, id: 0, flags: flags) }
        expectTakeError(&ring, .chainTooLong(tableSize: 3))
    }

    @Test func wrapCounterConfusion() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        driver.setDescriptor(0, address: Self.data, length: 16, id: 0, flags: 0x8080)
        expectTakeError(&ring, .availableFlagWithoutBuffer(position: 0, flags: 0x8080))
    }

    /// A descriptor of the previous lap is not available, and not an error.
    @Test func previousLapIsNotAvailable() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        driver.setDescriptor(0, address: Self.data, length: 16, id: 0, flags: MockPackedQueue.availableFlags(wrap: false))
        #expect(try ring.takeAvailable(into: DescriptorChain(capacity: 4)) == nil)
        #expect(!ring.isBroken && ring.inFlight == 0)
    }

    @Test func indirectInAChain() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offer([(Self.data, 16, false), (0x9000, 16, false)], id: 0)
        driver.setFlags(driver.flags(at: 1) | 4, at: 1)
        expectTakeError(&ring, .indirectInChain)
    }

    @Test func indirectWithNext() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offerIndirect(table: 0x9000, entries: [(Self.data, 16, false)], id: 0, extraFlags: 1)
        expectTakeError(&ring, .indirectWithNext)
    }

    @Test func indirectInIndirect() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offerIndirect(table: 0x9000, entries: [(Self.data, 16, false), (0x9000, 32, false)], id: 0)
        driver.setDescriptor(1, address: 0x9000, length: 32, id: 0, flags: 4, table: 0x9000)
        expectTakeError(&ring, .nestedIndirect)
    }

    @Test func indirectWithoutTheFeature() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offerIndirect(table: 0x9000, entries: [(Self.data, 16, false)], id: 0)
        expectTakeError(&ring, .indirectNotNegotiated)
    }

    @Test(arguments: [0, 24, 16 * 32769] as [UInt32])
    func badIndirectTableLength(length: UInt32) throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offerIndirect(table: 0x9000, entries: [(Self.data, 16, false)], id: 0, tableLength: length)
        expectTakeError(&ring, .invalidIndirectTableLength(length))
    }

    @Test func indirectTableOutsideMemory() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue(features: .indirectDescriptors)
        driver.offerIndirect(table: 0xFFFF0, entries: [], id: 0, tableLength: 32)
        expectTakeError(&ring, .indirectTableNotMapped(address: 0xFFFF0, length: 32))
    }

    @Test func bufferOutsideMemory() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false), (0xFFF00, 0x200, true)], id: 0)
        expectTakeError(&ring, .bufferNotMapped(address: 0xFFF00, length: 0x200))
    }

    @Test func bufferAddressWraps() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(UInt64.max - 8, 16, false)], id: 1)
        expectTakeError(&ring, .bufferAddressWraps(address: UInt64.max - 8, length: 16))
    }

    @Test func readableAfterWritable() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, true), (Self.data, 16, false)], id: 0)
        expectTakeError(&ring, .readableAfterWritable)
    }

    /// The one error that leaves the ring as it was (see PackedLongTakeTests): the buffer
    /// can be taken again into a larger chain.
    @Test func moreSpansThanTheChainHolds() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer((0..<3).map { (Self.data + UInt64($0) * 0x100, 16, false) }, id: 0)
        let chain = DescriptorChain(capacity: 2)
        let error = failure { () throws(VirtqueueError) in _ = try ring.takeAvailable(into: chain) }
        #expect(error == .tooManySpans(capacity: 2))
        #expect(chain.readableSpanCount == 0 && chain.readableLength == 0)
        #expect(!ring.isBroken && ring.inFlight == 0)
        #expect(try ring.takeAvailable(into: DescriptorChain(capacity: 3)) == 0)
    }
}
