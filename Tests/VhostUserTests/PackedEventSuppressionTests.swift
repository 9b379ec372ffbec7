import SpindleTestSupport
import Testing
@testable import VhostUser

/// Packed ring event suppression: the off_wrap arithmetic, interrupts as the driver area
/// asks, kicks as the device area says, and the base encoding of SET/GET_VRING_BASE.
@Suite struct PackedEventSuppressionTests {
    static let data: UInt64 = 0x10000

    static func offWrap(_ position: UInt16, _ wrap: Bool) -> UInt16 { PackedVringBase.half(position, wrap) }

    @Test func eventArithmetic() {
        // Same lap: the event is in [old, new).
        #expect(PackedVirtqueue.needsEvent(offWrap: Self.offWrap(3, true), newPosition: 5, newWrap: true, advanced: 3, size: 7))
        #expect(PackedVirtqueue.needsEvent(offWrap: Self.offWrap(2, true), newPosition: 5, newWrap: true, advanced: 3, size: 7))
        #expect(!PackedVirtqueue.needsEvent(offWrap: Self.offWrap(5, true), newPosition: 5, newWrap: true, advanced: 3, size: 7))
        #expect(!PackedVirtqueue.needsEvent(offWrap: Self.offWrap(1, true), newPosition: 5, newWrap: true, advanced: 3, size: 7))
        // The device wrapped: old was 5 under wrap 1, new is 1 under wrap 0 (advanced 3 of 7).
        #expect(PackedVirtqueue.needsEvent(offWrap: Self.offWrap(6, true), newPosition: 1, newWrap: false, advanced: 3, size: 7))
        #expect(PackedVirtqueue.needsEvent(offWrap: Self.offWrap(0, false), newPosition: 1, newWrap: false, advanced: 3, size: 7))
        #expect(!PackedVirtqueue.needsEvent(offWrap: Self.offWrap(1, false), newPosition: 1, newWrap: false, advanced: 3, size: 7))
        #expect(!PackedVirtqueue.needsEvent(offWrap: Self.offWrap(4, true), newPosition: 1, newWrap: false, advanced: 3, size: 7))
        // Nothing new: no event; a whole lap: always.
        #expect(!PackedVirtqueue.needsEvent(offWrap: Self.offWrap(5, true), newPosition: 5, newWrap: true, advanced: 0, size: 7))
        #expect(PackedVirtqueue.needsEvent(offWrap: Self.offWrap(5, false), newPosition: 5, newWrap: true, advanced: 7, size: 7))
        // The largest ring.
        #expect(PackedVirtqueue.needsEvent(offWrap: Self.offWrap(32767, true), newPosition: 1, newWrap: false, advanced: 2, size: 32768))
        #expect(!PackedVirtqueue.needsEvent(offWrap: Self.offWrap(1, false), newPosition: 1, newWrap: false, advanced: 2, size: 32768))
    }

    /// Completes one single-descriptor buffer and asks whether to interrupt.
    func completeOne(_ driver: MockPackedQueue, _ ring: inout PackedVirtqueue, id: UInt16) throws -> Bool {
        driver.offer([(Self.data, 16, false)], id: id)
        let taken = try #require(try ring.popAvailable())
        ring.pushUsed(head: taken, writtenLength: 0)
        _ = driver.takeUsed()
        return ring.shouldNotifyGuest()
    }

    @Test func interruptsAsTheDriverAsks() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue(features: .eventIndex)
        driver.setDriverEvent(flags: PackedVirtqueueLayout.eventFlagsDisable)
        #expect(try completeOne(driver, &ring, id: 0), "the first decision always interrupts")
        #expect(try !completeOne(driver, &ring, id: 1))
        driver.setDriverEvent(flags: PackedVirtqueueLayout.eventFlagsEnable)
        #expect(try completeOne(driver, &ring, id: 2))
        // DESC: used position is now 0 under wrap 0; ask for position 1 of this lap.
        driver.setDriverEvent(flags: PackedVirtqueueLayout.eventFlagsDescriptor, offWrap: Self.offWrap(1, false))
        #expect(try !completeOne(driver, &ring, id: 0), "wrote position 0")
        #expect(try completeOne(driver, &ring, id: 1), "wrote position 1")
        #expect(try !completeOne(driver, &ring, id: 2))
    }

    @Test func descriptorEventsNeedEventIndex() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        _ = try completeOne(driver, &ring, id: 0)
        driver.setDriverEvent(flags: PackedVirtqueueLayout.eventFlagsDescriptor, offWrap: Self.offWrap(2, false))
        #expect(try completeOne(driver, &ring, id: 1), "DESC without EVENT_IDX reads as ENABLE")
    }

    @Test func notifyOnEmpty() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue(features: .notifyOnEmpty)
        _ = try completeOne(driver, &ring, id: 0)
        driver.setDriverEvent(flags: PackedVirtqueueLayout.eventFlagsDisable)
        #expect(try completeOne(driver, &ring, id: 1), "ring empty, nothing in flight")
    }

    @Test func kickSuppression() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        ring.disableGuestKicks()
        #expect(driver.deviceEvent.flags == PackedVirtqueueLayout.eventFlagsDisable)
        let kicksWanted = ring.enableGuestKicks()
        #expect(!kicksWanted)
        #expect(driver.deviceEvent.flags == PackedVirtqueueLayout.eventFlagsEnable)
        driver.offer([(Self.data, 16, false)], id: 0)
        ring.disableGuestKicks()
        let workWaiting = ring.enableGuestKicks()
        #expect(workWaiting, "work arrived while kicks were off")
    }

    @Test func kickEventAtTheNextDescriptor() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue(features: .eventIndex)
        for id: UInt16 in 0..<4 {
            driver.offer([(Self.data, 16, false)], id: id % 3)
            _ = try ring.popAvailable()
            ring.pushUsed(head: id % 3, writtenLength: 0)
            _ = driver.takeUsed()
        }
        let kicksWanted = ring.enableGuestKicks()
        #expect(!kicksWanted)
        #expect(driver.deviceEvent.flags == PackedVirtqueueLayout.eventFlagsDescriptor)
        #expect(driver.deviceEvent.offWrap == Self.offWrap(1, false))
    }

    @Test func baseEncodingRoundTrip() {
        let samples = [PackedVringBase.initial,
                       PackedVringBase(availablePosition: 5, availableWrap: false, usedPosition: 3, usedWrap: true),
                       PackedVringBase(availablePosition: 32767, availableWrap: true, usedPosition: 32767, usedWrap: false)]
        for base in samples { #expect(PackedVringBase(encoded: base.encoded) == base) }
        #expect(PackedVringBase.initial.encoded == 0x8000_8000)
        let qemu = PackedVringBase(encoded: 0x0003_8005)
        #expect(qemu == PackedVringBase(availablePosition: 5, availableWrap: true, usedPosition: 3, usedWrap: false))
    }

    /// A ring set up from a base continues where it says (a reconnect): buffers come from the
    /// avail position, used descriptors go to the used position with its wrap counter.
    @Test func startsAtTheBase() throws {
        let base = PackedVringBase(availablePosition: 2, availableWrap: false, usedPosition: 2, usedWrap: false)
        let driver = MockPackedQueue(size: 3, startingAt: base)
        var ring = try driver.queue()
        #expect(ring.base == base)
        #expect(ring.lastAvailableIndex == 2)
        driver.offer([(Self.data, 16, false), (Self.data, 1, true)], id: 1)
        let id = try #require(try ring.popAvailable())
        ring.pushUsed(head: id, writtenLength: 1)
        #expect(driver.takeUsed()?.id == 1)
        #expect(ring.base == PackedVringBase(availablePosition: 1, availableWrap: true, usedPosition: 1, usedWrap: true))
        #expect(ring.lastAvailableIndex == 0x8001)
    }
}
