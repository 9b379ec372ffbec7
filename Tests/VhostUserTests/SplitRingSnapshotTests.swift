import SpindleTestSupport
import Testing
@testable import VhostUser

/// The six index fields the start/stop debug lines report, read from where the spec puts them.
@Suite struct SplitRingSnapshotTests {
    @Test func snapshotReadsEachFieldFromItsPlaceInGuestMemory() throws {
        let guest = MockSplitQueue()
        var queue = try guest.queue(features: [.eventIndex], lastAvailable: 0)
        guest.offer(0, 1, 2)
        guest.setUsedEvent(1)
        guest.setAvailableFlags(VirtqueueLayout.availableFlagNoInterrupt)
        _ = try queue.popAvailable()
        queue.pushUsed(head: 0, writtenLength: 1)
        queue.setAvailableEvent(3)
        let snapshot = queue.snapshot
        #expect(snapshot == SplitRingSnapshot(availableFlags: VirtqueueLayout.availableFlagNoInterrupt, availableIndex: 3,
                                              usedEvent: 1, usedFlags: 0, usedIndex: 1, availableEvent: 3))
        #expect(snapshot.description == "avail.flags 1 avail.idx 3 used_event 1 used.flags 0 used.idx 1 avail_event 3")
    }

    @Test func snapshotSeesIndicesAcrossTheWrap() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue(features: [.eventIndex], lastAvailable: 65534)
        guest.availableIndex = 1
        guest.setUsedEvent(65535)
        #expect(queue.snapshot.availableIndex == 1)
        #expect(queue.snapshot.usedEvent == 65535)
        #expect(queue.snapshot.usedIndex == guest.usedIndex)
    }
}
