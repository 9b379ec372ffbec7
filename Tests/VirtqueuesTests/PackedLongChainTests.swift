import ControlThread
import SpindleTestSupport
import Testing
import VhostUser
@testable import Virtqueues

/// Packed queues hold short chains in their slots, like split ones: a buffer with more
/// descriptors (or indirect entries) than a slot's own spans is taken again into a span
/// block borrowed from the IOThread's pool, waits in the ring while the pool is empty, and
/// hostile long chains still stop the queue without keeping a block.
@Suite(.serialized) struct PackedLongChainTests {
    @Test @ControlActor func packedSlotsHoldShortChainsOnly() async throws {
        let rig = try PackedServerTestRig(size: 7, inlineSpans: 2)
        #expect(rig.queue.inlineSpans == 2 && rig.queue.longChainSpans == 4)
        await rig.tearDown()
    }

    /// Chains of 1 to 4 descriptors (direct, and every third one indirect) over three laps of
    /// an odd-sized ring, so that direct chains straddle the ring's end: each long one holds
    /// one block while in flight, and every buffer comes back used once, with its length.
    @Test(arguments: [7, 13])
    @ControlActor func longChainsBorrowABlockAcrossTheRingsEnd(size: Int) async throws {
        let rig = try PackedServerTestRig(size: size, inlineSpans: 2)
        for round in 0..<(3 * size) {
            let id = UInt16(round % size)
            let count = 1 + round % 4
            rig.offer(id: id, count: count, indirect: round % 3 == 2)
            rig.kick()
            #expect(await rig.eventually { $0.started.count == round + 1 })
            #expect(await rig.blocksInUse() == (count > 2 ? 1 : 0), "round \(round)")
            await rig.complete(id: id)
            #expect(await rig.eventuallyUsed(round + 1))
            #expect(rig.used.last?.id == id && rig.used.last?.length == UInt32(id) + 100)
            #expect(await rig.blocksInUse() == 0)
        }
        #expect(await rig.onThread { $0.started.count } == 3 * size)
        #expect(!rig.isBroken)
        await rig.tearDown()
    }

    /// One block in the pool: the second long buffer waits in the ring (taken by nobody, the
    /// short one behind it not taken either) until the first gives its block back.
    @Test @ControlActor func longBufferWaitsInTheRingForABlockThenProceeds() async throws {
        let rig = try PackedServerTestRig(size: 7, inlineSpans: 2, maxSpanBlocks: 1)
        rig.offer(id: 0, count: 3)
        rig.offer(id: 1, count: 3, indirect: true)
        rig.offer(id: 2, count: 1)
        rig.kick()
        #expect(await rig.eventually { $0.started == [0] })
        try await Task.sleep(nanoseconds: 50_000_000)
        #expect(await rig.onThread { $0.started } == [0])
        #expect(await rig.blocksInUse() == 1 && !rig.isBroken)
        await rig.complete(id: 0)
        #expect(await rig.eventually { $0.started == [0, 1, 2] })
        await rig.complete(id: 2)
        await rig.complete(id: 1)
        #expect(await rig.eventuallyUsed(3))
        #expect(rig.used.map(\.id) == [0, 2, 1])
        #expect(await rig.blocksInUse() == 0)
        await rig.tearDown()
    }

    /// A queue stopped while a long buffer waits for a block: the stop completes once the
    /// request in flight is done, and the waiting buffer is still available in the base.
    @Test @ControlActor func stopLeavesAWaitingLongBufferInTheRing() async throws {
        let rig = try PackedServerTestRig(size: 7, inlineSpans: 2, maxSpanBlocks: 1)
        rig.offer(id: 0, count: 3)
        rig.offer(id: 1, count: 3)
        rig.kick()
        #expect(await rig.eventually { $0.started == [0] })
        let queue = rig.queue, thread = rig.thread
        let stop = Task { @ControlActor in await queue.stop(on: thread) }
        try await Task.sleep(nanoseconds: 50_000_000)
        await rig.complete(id: 0)
        let base = PackedVringBase(encoded: await stop.value)
        #expect(base.availablePosition == 3 && base.usedPosition == 3)
        #expect(await rig.onThread { $0.started } == [0])
        #expect(!rig.isBroken)
        await rig.tearDown()
    }

    /// More descriptors than any request may have (5 > 4): the retake into a block fails too,
    /// the queue breaks and the block goes back.
    @Test @ControlActor func chainLongerThanAnyRoomBreaksTheQueue() async throws {
        let rig = try PackedServerTestRig(size: 7, inlineSpans: 2)
        rig.offer(id: 0, count: 5)
        rig.kick()
        #expect(await rig.eventually { _ in rig.isBroken })
        #expect(await rig.onThread { $0.started.isEmpty })
        #expect(await rig.blocksInUse() == 0)
        await rig.tearDown()
    }

    /// Every descriptor of the ring chained to the next (NEXT all round): longer than the ring
    /// once it has a block's room; the queue breaks and keeps no block.
    @Test @ControlActor func chainLongerThanTheRingBreaksTheQueue() async throws {
        let rig = try PackedServerTestRig(size: 3, inlineSpans: 2, longestSpans: 8)
        let flags = MockPackedQueue.availableFlags(wrap: true) | 1  // AVAIL, NEXT
        for position in 0..<3 {
            rig.driver.setDescriptor(position, address: 0x10000 + 0x20 * UInt64(position), length: 16, id: 0,
                                     flags: flags | 2)
        }
        rig.kick()
        #expect(await rig.eventually { _ in rig.isBroken })
        #expect(await rig.onThread { $0.started.isEmpty })
        #expect(await rig.blocksInUse() == 0)
        await rig.tearDown()
    }

    /// A long buffer whose id is still in flight: the queue breaks; the request in flight
    /// keeps its block until it completes, the rejected one holds none.
    @Test @ControlActor func longChainReusingAnIdInFlightBreaksTheQueue() async throws {
        let rig = try PackedServerTestRig(size: 7, inlineSpans: 2)
        rig.offer(id: 4, count: 3)
        rig.kick()
        #expect(await rig.eventually { $0.started == [4] })
        rig.offer(id: 4, count: 3)
        rig.kick()
        #expect(await rig.eventually { _ in rig.isBroken })
        #expect(await rig.blocksInUse() == 1)
        await rig.complete(id: 4)
        #expect(await rig.eventuallyUsed(1))
        #expect(await rig.blocksInUse() == 0)
        #expect(await rig.onThread { $0.started } == [4])
        await rig.tearDown()
    }
}
