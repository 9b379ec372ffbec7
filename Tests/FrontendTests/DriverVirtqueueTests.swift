import SpindleTestSupport
import Testing
import VhostUser
@testable import VhostUserFrontend

@Suite struct DriverVirtqueueTests {
    @Test func availPushIsInvisibleUntilPublished() {
        let memory = RingTestMemory(size: 8)
        var ring = memory.ring(eventIndex: false)
        ring.pushAvailable(head: 3)
        ring.pushAvailable(head: 6)
        #expect(memory.availEntry(0) == 3)
        #expect(memory.availEntry(1) == 6)
        #expect(memory.availIdx == 0)
        #expect(ring.availableIndex == 2)
        let r1 = ring.publishAvailable()
        #expect(r1)  // used.flags 0: the device wants kicks
        #expect(memory.availIdx == 2)
        #expect(ring.publishedAvailableIndex == 2)
        let r2 = ring.publishAvailable()
        #expect(!r2)  // nothing new: no kick
    }

    @Test func availRingWrapsAroundItsSize() {
        let memory = RingTestMemory(size: 4)
        var ring = memory.ring(eventIndex: false)
        for head in 0..<6 { ring.pushAvailable(head: UInt16(head)) }
        #expect(memory.availEntry(0) == 4)
        #expect(memory.availEntry(1) == 5)
        #expect(memory.availEntry(2) == 2)
        _ = ring.publishAvailable()
        #expect(memory.availIdx == 6)
    }

    @Test func noNotifyFlagSuppressesKicks() {
        let memory = RingTestMemory(size: 8)
        var ring = memory.ring(eventIndex: false)
        memory.setUsedFlags(VirtqueueLayout.usedFlagNoNotify)
        ring.pushAvailable(head: 0)
        let r3 = ring.publishAvailable()
        #expect(!r3)
        memory.setUsedFlags(0)
        ring.pushAvailable(head: 1)
        let r4 = ring.publishAvailable()
        #expect(r4)
    }

    @Test func availEventDecidesKicksWithEventIndex() {
        let memory = RingTestMemory(size: 8)
        var ring = memory.ring(eventIndex: true)
        memory.setUsedFlags(VirtqueueLayout.usedFlagNoNotify)  // ignored with EVENT_IDX
        memory.setAvailEvent(0)
        ring.pushAvailable(head: 0)
        let r5 = ring.publishAvailable()
        #expect(r5)  // avail_event 0 is in [0, 1)
        ring.pushAvailable(head: 1)
        let r6 = ring.publishAvailable()
        #expect(!r6)  // device still wants a kick only at 0
        memory.setAvailEvent(3)
        ring.pushAvailable(head: 2)
        let r7 = ring.publishAvailable()
        #expect(!r7)  // window [2, 3) misses 3
        ring.pushAvailable(head: 3)
        ring.pushAvailable(head: 4)
        let r8 = ring.publishAvailable()
        #expect(r8)  // window [3, 5) holds 3
    }

    @Test func needsEventMath() {
        typealias Q = DriverVirtqueue
        #expect(Q.needsEvent(eventIndex: 0, newIndex: 1, oldIndex: 0))
        #expect(!Q.needsEvent(eventIndex: 1, newIndex: 1, oldIndex: 0))
        #expect(Q.needsEvent(eventIndex: 4, newIndex: 8, oldIndex: 2))
        #expect(!Q.needsEvent(eventIndex: 8, newIndex: 8, oldIndex: 2))
        #expect(!Q.needsEvent(eventIndex: 1, newIndex: 8, oldIndex: 2))
        // Across the u16 wrap.
        #expect(Q.needsEvent(eventIndex: 0xFFFF, newIndex: 2, oldIndex: 0xFFFE))
        #expect(Q.needsEvent(eventIndex: 1, newIndex: 2, oldIndex: 0xFFFE))
        #expect(!Q.needsEvent(eventIndex: 2, newIndex: 2, oldIndex: 0xFFFE))
        #expect(!Q.needsEvent(eventIndex: 0xFFFD, newIndex: 2, oldIndex: 0xFFFE))
        // An empty window never needs an event.
        #expect(!Q.needsEvent(eventIndex: 5, newIndex: 5, oldIndex: 5))
        // Agrees with the device side's implementation for every small case.
        for old in UInt16(0xFFF8)...UInt16(0xFFFF) {
            for step in UInt16(0)..<8 {
                for event in UInt16(0xFFF0)...UInt16(0xFFFF) {
                    let new = old &+ step
                    #expect(Q.needsEvent(eventIndex: event, newIndex: new, oldIndex: old)
                            == SplitVirtqueue.needsEvent(eventIndex: event, newIndex: new, oldIndex: old))
                }
            }
        }
    }

    @Test func usedHarvestInOrder() {
        let memory = RingTestMemory(size: 4)
        var ring = memory.ring(eventIndex: false)
        #expect(ring.pendingUsedCount() == 0)
        memory.setUsedEntry(0, id: 3, length: 4097)
        memory.setUsedEntry(1, id: 0, length: 1)
        memory.setUsedIdx(2)
        #expect(ring.pendingUsedCount() == 2)
        let first = ring.popUsed()
        #expect(first.id == 3 && first.length == 4097)
        let second = ring.popUsed()
        #expect(second.id == 0 && second.length == 1)
        #expect(ring.pendingUsedCount() == 0)
        #expect(ring.lastUsedIndex == 2)
        // Wrapping: entries 2, 3, then 0 again.
        memory.setUsedEntry(2, id: 6, length: 0)
        memory.setUsedEntry(3, id: 9, length: 0)
        memory.setUsedEntry(0, id: 12, length: 0)
        memory.setUsedIdx(5)
        #expect(ring.pendingUsedCount() == 3)
        let r9 = ring.popUsed()
        #expect(r9.id == 6)
        let r10 = ring.popUsed()
        #expect(r10.id == 9)
        let r11 = ring.popUsed()
        #expect(r11.id == 12)
    }

    @Test func usedIndexBeyondTheRingIsReported() {
        let memory = RingTestMemory(size: 4)
        let ring = memory.ring(eventIndex: false)
        memory.setUsedIdx(4)
        #expect(ring.pendingUsedCount() == 4)
        memory.setUsedIdx(5)
        #expect(ring.pendingUsedCount() == nil)
        memory.setUsedIdx(0xFFFF)  // "went backwards": also more than the ring holds
        #expect(ring.pendingUsedCount() == nil)
    }

    @Test func callRequestsWithoutEventIndex() {
        let memory = RingTestMemory(size: 8)
        let ring = memory.ring(eventIndex: false)
        ring.suppressCalls()
        #expect(memory.availFlags == VirtqueueLayout.availableFlagNoInterrupt)
        #expect(!ring.requestCallOnNextUsed())
        #expect(memory.availFlags == 0)
        memory.setUsedIdx(1)
        #expect(ring.requestCallOnNextUsed())  // work is there: do not sleep
    }

    @Test func callRequestsWithEventIndex() {
        let memory = RingTestMemory(size: 8)
        var ring = memory.ring(eventIndex: true)
        memory.setUsedEntry(0, id: 0, length: 0)
        memory.setUsedEntry(1, id: 0, length: 0)
        memory.setUsedIdx(2)
        _ = ring.popUsed()
        _ = ring.popUsed()
        #expect(!ring.requestCallOnNextUsed())
        #expect(memory.usedEvent == 2)  // call when used.idx passes 2
        #expect(memory.availFlags == 0)
        ring.suppressCalls()
        #expect(memory.usedEvent == 1)  // behind what was harvested: out of reach
        // The device's view: publishing 2 -> 3 with used_event 1 needs no call.
        #expect(!DriverVirtqueue.needsEvent(eventIndex: memory.usedEvent, newIndex: 3, oldIndex: 2))
    }
}

extension RingTestMemory {
    /// The frontend's ring over this memory.
    func ring(eventIndex: Bool) -> DriverVirtqueue {
        DriverVirtqueue(size: size, descriptors: descriptors, available: available, used: used, eventIndex: eventIndex)
    }
}
