import SpindleTestSupport
import Testing
@testable import VhostUser

/// Dirty logging of a packed ring: used descriptors are marked in the descriptor ring (at its
/// guest-physical address), a wrapped range in both places, the device area when stopping.
@Suite struct PackedDirtyLogTests {
    static let data: UInt64 = 0x10000
    /// Where the frontend says the device area is logged (log_guest_addr).
    static let logAddress = MockPackedQueue.deviceArea

    /// Ring of 384 descriptors at 0x1000: slots 0-255 in page 1, 256-383 in page 2.
    @Test func publishedDescriptorsAreMarked() throws {
        let start = PackedVringBase(availablePosition: 254, availableWrap: true, usedPosition: 254, usedWrap: true)
        let driver = MockPackedQueue(size: 384, startingAt: start)
        var ring = try driver.queue()
        #expect(ring.descriptorRingGuestAddress == MockPackedQueue.descriptorRing)
        let log = TestLog()
        ring.beginUsedRingLog()
        driver.offer([(Self.data, 16, false)], id: 0)
        var id = try #require(try ring.popAvailable())
        ring.pushUsed(head: id, writtenLength: 0)
        #expect(ring.logPublishedUsed(at: Self.logAddress, in: log.bitmap) == 0)
        #expect(log.markedPages == [1])
        #expect(ring.logPublishedUsed(at: Self.logAddress, in: log.bitmap) == 0)

        let second = TestLog()
        driver.offer([(Self.data, 16, false), (Self.data, 16, false)], id: 1)
        id = try #require(try ring.popAvailable())
        ring.pushUsed(head: id, writtenLength: 0)
        _ = ring.logPublishedUsed(at: Self.logAddress, in: second.bitmap)
        #expect(second.markedPages == [1, 2], "slots 255 and 256")
    }

    @Test func wrappedRangeIsMarkedAtBothEnds() throws {
        let start = PackedVringBase(availablePosition: 383, availableWrap: true, usedPosition: 383, usedWrap: true)
        let driver = MockPackedQueue(size: 384, startingAt: start)
        var ring = try driver.queue()
        let log = TestLog()
        ring.beginUsedRingLog()
        driver.offer([(Self.data, 16, false), (Self.data, 16, false)], id: 0)
        let id = try #require(try ring.popAvailable())
        ring.pushUsed(head: id, writtenLength: 0)
        _ = ring.logPublishedUsed(at: Self.logAddress, in: log.bitmap)
        #expect(log.markedPages == [1, 2])
    }

    @Test func beginForgetsEarlierPublishes() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false)], id: 0)
        let id = try #require(try ring.popAvailable())
        ring.pushUsed(head: id, writtenLength: 0)
        ring.beginUsedRingLog()
        let log = TestLog()
        #expect(ring.logPublishedUsed(at: Self.logAddress, in: log.bitmap) == 0)
        #expect(log.markedPages.isEmpty)
    }

    @Test func writableBuffersAndDeviceArea() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false), (Self.data + 0x3000, 0x2000, true)], id: 0)
        let id = try #require(try ring.popAvailable())
        let chain = DescriptorChain(capacity: 4)
        try ring.readChain(head: id, into: chain)
        let log = TestLog()
        #expect(ring.logWritableBuffers(of: chain, in: log.bitmap) == 0)
        #expect(log.markedPages == [0x13, 0x14])
        let stopping = TestLog()
        #expect(ring.logDeviceArea(at: Self.logAddress, in: stopping.bitmap) == 0)
        #expect(stopping.markedPages == [1, 8])
    }
}
