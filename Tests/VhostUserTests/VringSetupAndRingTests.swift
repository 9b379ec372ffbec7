import SpindleTestSupport
import Testing
@testable import VhostUser

@Suite struct VringSetupAndRingTests {
    @Test(arguments: [UInt32(0), 3, 24, 65536, 32769])
    func rejectsInvalidSizes(size: UInt32) {
        let guest = MockSplitQueue()
        #expect(throws: VirtqueueSetupError.invalidSize(size)) { try guest.queue(size: size) }
    }

    @Test func acceptsLimits() throws {
        let guest = MockSplitQueue()
        _ = try guest.queue(size: 1)
        _ = try guest.queue(size: 256)
        // 32768 entries need 512 KiB of descriptors: not in this guest's 64 KiB region.
        #expect(throws: VirtqueueSetupError.self) { try guest.queue(size: 32768) }
    }

    @Test func rejectsMisalignedOrUnmappedRings() {
        let guest = MockSplitQueue()
        let bias = MockSplitQueue.separateUVABias
        var addresses = guest.addresses
        addresses.descriptorTable += 8
        #expect(throws: VirtqueueSetupError.misaligned(.descriptorTable, userAddress: addresses.descriptorTable, alignment: 16)) {
            try SplitVirtqueue(memory: guest.memory, size: 16, addresses: addresses, features: [])
        }
        addresses = guest.addresses
        addresses.availableRing += 1
        #expect(throws: VirtqueueSetupError.misaligned(.availableRing, userAddress: addresses.availableRing, alignment: 2)) {
            try SplitVirtqueue(memory: guest.memory, size: 16, addresses: addresses, features: [])
        }
        addresses = guest.addresses
        addresses.usedRing += 2
        #expect(throws: VirtqueueSetupError.misaligned(.usedRing, userAddress: addresses.usedRing, alignment: 4)) {
            try SplitVirtqueue(memory: guest.memory, size: 16, addresses: addresses, features: [])
        }
        addresses = guest.addresses
        addresses.usedRing = bias + 0x50000
        #expect(throws: VirtqueueSetupError.notMapped(.usedRing, userAddress: bias + 0x50000, length: 6 + 8 * 16)) {
            try SplitVirtqueue(memory: guest.memory, size: 16, addresses: addresses, features: [])
        }
        // Straddles the end of region A (even though B follows in both address spaces).
        addresses = guest.addresses
        addresses.availableRing = bias + 0xFFF0
        #expect(throws: VirtqueueSetupError.notMapped(.availableRing, userAddress: bias + 0xFFF0, length: 6 + 2 * 16)) {
            try SplitVirtqueue(memory: guest.memory, size: 16, addresses: addresses, features: [])
        }
        // Guest physical addresses are not user addresses.
        addresses = .init(descriptorTable: 0x1000, availableRing: 0x3000, usedRing: 0x4000)
        #expect(throws: VirtqueueSetupError.self) {
            try SplitVirtqueue(memory: guest.memory, size: 16, addresses: addresses, features: [])
        }
    }

    @Test func popsHeadsInOrder() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue()
        let result1 = try queue.popAvailable()
        #expect(result1 == nil)
        guest.offer(3, 7, 0)
        let result2 = try queue.availableCount()
        #expect(result2 == 3)
        let result3 = try queue.popAvailable()
        #expect(result3 == 3)
        let result4 = try queue.popAvailable()
        #expect(result4 == 7)
        let result5 = try queue.popAvailable()
        #expect(result5 == 0)
        let result6 = try queue.popAvailable()
        #expect(result6 == nil)
        #expect(queue.lastAvailableIndex == 3)
        #expect(queue.inFlight == 3)
    }

    @Test func availableIndexWrapsAround() throws {
        let guest = MockSplitQueue()
        guest.availableIndex = 65534
        var queue = try guest.queue(lastAvailable: 65534)
        guest.offer(1, 2, 3)
        #expect(guest.availableIndex == 1)
        let result7 = try queue.availableCount()
        #expect(result7 == 3)
        let result8 = try queue.popAvailable()
        #expect(result8 == 1)
        let result9 = try queue.popAvailable()
        #expect(result9 == 2)
        let result10 = try queue.popAvailable()
        #expect(result10 == 3)
        #expect(queue.lastAvailableIndex == 1)
    }

    @Test func availableIndexJumpBreaksQueue() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue()
        guest.availableIndex = 16  // exactly a full ring: fine
        let result11 = try queue.availableCount()
        #expect(result11 == 16)
        guest.availableIndex = 17
        #expect(throws: VirtqueueError.availableIndexJump(lastAvailable: 0, available: 17, queueSize: 16)) {
            try queue.availableCount()
        }
        #expect(queue.isBroken)
        let afterwards = try queue.popAvailable()
        #expect(afterwards == nil)
        // Going backwards is a jump of almost 65536.
        var other = try guest.queue(lastAvailable: 20)
        guest.availableIndex = 19
        #expect(throws: VirtqueueError.self) { try other.availableCount() }
    }

    @Test func headOutOfRange() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue()
        guest.offer(16)
        #expect(throws: VirtqueueError.headOutOfRange(head: 16, queueSize: 16)) { try queue.popAvailable() }
        #expect(queue.isBroken)
    }

    @Test func usedRingBatching() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue()
        guest.offer(5, 6)
        _ = try queue.popAvailable()
        _ = try queue.popAvailable()
        queue.addUsed(head: 6, writtenLength: 513)
        queue.addUsed(head: 5, writtenLength: 1)
        #expect(guest.usedIndex == 0)  // nothing published yet
        queue.publishUsed()
        #expect(guest.usedIndex == 2)
        #expect(guest.usedElement(0) == (6, 513))
        #expect(guest.usedElement(1) == (5, 1))
        #expect(queue.inFlight == 0)
        queue.pushUsed(head: 9, writtenLength: 4)
        #expect(guest.usedIndex == 3)
    }

    @Test func usedIndexResumesFromRingAndWraps() throws {
        let guest = MockSplitQueue()
        guest.write(UInt16(65535), at: guest.usedRing + 2)
        var queue = try guest.queue()
        #expect(queue.usedIndex == 65535)
        queue.pushUsed(head: 1, writtenLength: 1)
        queue.pushUsed(head: 2, writtenLength: 1)
        #expect(guest.usedIndex == 1)
        #expect(guest.usedElement(15) == (1, 1))  // 65535 % 16
        #expect(guest.usedElement(0) == (2, 1))
    }
}
