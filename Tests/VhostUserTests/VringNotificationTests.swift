import SpindleTestSupport
import Testing
@testable import VhostUser

@Suite struct VringNotificationTests {
    @Test func needsEventMath() {
        // Event inside [old, new): notify.
        #expect(SplitVirtqueue.needsEvent(eventIndex: 5, newIndex: 6, oldIndex: 5))
        #expect(SplitVirtqueue.needsEvent(eventIndex: 5, newIndex: 10, oldIndex: 3))
        // Event already passed before old, or not reached yet.
        #expect(!SplitVirtqueue.needsEvent(eventIndex: 2, newIndex: 10, oldIndex: 3))
        #expect(!SplitVirtqueue.needsEvent(eventIndex: 10, newIndex: 10, oldIndex: 3))
        #expect(!SplitVirtqueue.needsEvent(eventIndex: 5, newIndex: 5, oldIndex: 5))
        // Wrap-around of the u16 indices.
        #expect(SplitVirtqueue.needsEvent(eventIndex: 65535, newIndex: 2, oldIndex: 65534))
        #expect(SplitVirtqueue.needsEvent(eventIndex: 0, newIndex: 2, oldIndex: 65534))
        #expect(!SplitVirtqueue.needsEvent(eventIndex: 2, newIndex: 2, oldIndex: 65534))
        #expect(!SplitVirtqueue.needsEvent(eventIndex: 65533, newIndex: 2, oldIndex: 65534))
    }

    @Test func eventIndexInterruptSuppression() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue(features: [.eventIndex])
        guest.setUsedEvent(1)
        queue.pushUsed(head: 0, writtenLength: 1)         // used.idx 0 → 1
        let result1 = queue.shouldNotifyGuest()  // first decision always notifies
        #expect(result1)
        queue.pushUsed(head: 1, writtenLength: 1)         // 1 → 2, crosses used_event 1
        let result2 = queue.shouldNotifyGuest()
        #expect(result2)
        queue.pushUsed(head: 2, writtenLength: 1)         // 2 → 3, used_event still 1
        let result3 = queue.shouldNotifyGuest()
        #expect(!result3)
        guest.setUsedEvent(4)
        queue.pushUsed(head: 3, writtenLength: 1)         // 3 → 4: not past 4 yet
        let result4 = queue.shouldNotifyGuest()
        #expect(!result4)
        queue.pushUsed(head: 4, writtenLength: 1)         // 4 → 5
        let result5 = queue.shouldNotifyGuest()
        #expect(result5)
        #expect(queue.needsNotification(oldUsedIndex: 3, newUsedIndex: 5))
        #expect(!queue.needsNotification(oldUsedIndex: 5, newUsedIndex: 7))
    }

    @Test func noInterruptFlagWithoutEventIndex() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue()
        queue.pushUsed(head: 0, writtenLength: 1)
        let result6 = queue.shouldNotifyGuest()
        #expect(result6)
        guest.setAvailableFlags(VirtqueueLayout.availableFlagNoInterrupt)
        queue.pushUsed(head: 1, writtenLength: 1)
        let result7 = queue.shouldNotifyGuest()
        #expect(!result7)
        guest.setAvailableFlags(0)
        queue.pushUsed(head: 2, writtenLength: 1)
        let result8 = queue.shouldNotifyGuest()
        #expect(result8)
    }

    @Test func notifyOnEmpty() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue(features: [.notifyOnEmpty])
        guest.setAvailableFlags(VirtqueueLayout.availableFlagNoInterrupt)
        guest.offer(0)
        _ = try queue.popAvailable()
        queue.pushUsed(head: 0, writtenLength: 1)
        _ = queue.shouldNotifyGuest()
        // Nothing in flight and nothing available: notify despite NO_INTERRUPT.
        queue.pushUsed(head: 0, writtenLength: 1)
        let result9 = queue.shouldNotifyGuest()
        #expect(result9)
        guest.offer(1)
        queue.pushUsed(head: 0, writtenLength: 1)
        let result10 = queue.shouldNotifyGuest()
        #expect(!result10)
    }

    @Test func kickSuppressionWithFlags() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue()
        queue.disableGuestKicks()
        #expect(guest.usedFlags == VirtqueueLayout.usedFlagNoNotify)
        let result11 = queue.enableGuestKicks()
        #expect(!result11)
        #expect(guest.usedFlags == 0)
        queue.disableGuestKicks()
        guest.offer(2)  // arrives while kicks are off
        let result12 = queue.enableGuestKicks()
        #expect(result12)
        let result13 = try queue.popAvailable()
        #expect(result13 == 2)
        let result14 = queue.enableGuestKicks()
        #expect(!result14)
    }

    @Test func kickSuppressionWithEventIndex() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue(features: [.eventIndex])
        queue.disableGuestKicks()
        #expect(guest.usedFlags == 0)  // flags unused with EVENT_IDX
        guest.offer(1, 2)
        let result15 = queue.enableGuestKicks()
        #expect(result15)
        #expect(guest.availableEvent() == 0)
        _ = try queue.popAvailable()
        _ = try queue.popAvailable()
        let result16 = queue.enableGuestKicks()
        #expect(!result16)
        #expect(guest.availableEvent() == 2)
        queue.setAvailableEvent(65535)
        #expect(guest.availableEvent() == 65535)
    }

    @Test func baseIndexRoundTrip() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue()
        queue.lastAvailableIndex = 40
        guest.availableIndex = 42
        guest.offer(7, 8, size: 16)
        let result17 = try queue.availableCount()
        #expect(result17 == 4)
        #expect(queue.lastAvailableIndex == 40)
    }
}
