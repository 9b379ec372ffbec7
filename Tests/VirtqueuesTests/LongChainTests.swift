import ControlThread
import Glibc
import IOThreads
import Testing
@testable import Virtqueues

/// Chains longer than a slot's own room borrow a span block from their IOThread's pool while
/// in flight: they start and complete like any request, wait (taking nothing else) when the
/// pool is empty, and give the block back when they finish. A stopped queue frees its slots.
@Suite(.serialized) struct LongChainTests {
    @Test func poolLendsUpToItsBoundAndTrimsWhatIsUnused() {
        let pool = SpanBlockPool(maxBlocks: 3)
        let blocks = (0..<3).compactMap { _ in pool.take() }
        #expect(blocks.count == 3)
        #expect(pool.take() == nil)
        #expect(pool.inUseCount == 3)
        for block in blocks { pool.give(block) }
        #expect(pool.inUseCount == 0 && pool.allocatedCount == 3)
        pool.trim(keeping: 1)
        #expect(pool.allocatedCount == 1)
        #expect(pool.allocatedBytes == SpanBlockPool.spansPerBlock * MemoryLayout<iovec>.stride)
        let again = pool.take()
        #expect(again != nil && pool.allocatedCount == 1)
        if let again { pool.give(again) }
    }

    @Test @ControlActor func longChainStartsWithABorrowedBlockAndGivesItBack() async throws {
        let rig = try ServerTestRig(inlineSpans: 2)
        let head = rig.setLongChain(first: 0, count: 4)  // 4 spans: over 2, within 4
        rig.offer(head)
        #expect(await rig.eventually { $0.started == [head] })
        let thread = rig.thread
        #expect(await rig.onThread { _ in thread.spanBlocks.inUseCount } == 1)
        await rig.complete(head: head)
        #expect(await rig.eventually { _ in rig.usedIndex == 1 })
        #expect(await rig.onThread { _ in thread.spanBlocks.inUseCount } == 0)
        #expect(rig.broken.value.load(ordering: .relaxed) == 0)
        await rig.tearDown()
    }

    @Test @ControlActor func longChainWaitsForABlockThenProceeds() async throws {
        let rig = try ServerTestRig(inlineSpans: 2, maxSpanBlocks: 1)
        let first = rig.setLongChain(first: 0, count: 3)
        let second = rig.setLongChain(first: 3, count: 3)
        rig.setDescriptor(6)  // a short one behind the waiting long one
        rig.offer(first, second, 6)
        #expect(await rig.eventually { $0.started == [first] })
        try await Task.sleep(nanoseconds: 50_000_000)
        // The second waits in its slot (no block), and the queue takes nothing after it.
        #expect(await rig.onThread { $0.started } == [first])
        #expect(rig.broken.value.load(ordering: .relaxed) == 0)
        await rig.complete(head: first)
        #expect(await rig.eventually { $0.started == [first, second, 6] })
        await rig.complete(head: second)
        await rig.complete(head: 6)
        #expect(await rig.eventually { _ in rig.usedIndex == 3 })
        let used = await rig.onThread { _ in rig.used.map(\.head) }
        #expect(used == [UInt32(first), UInt32(second), 6])
        await rig.tearDown()
    }

    @Test @ControlActor func stopWaitsForAWaitingLongChain() async throws {
        let rig = try ServerTestRig(inlineSpans: 2, maxSpanBlocks: 1)
        let first = rig.setLongChain(first: 0, count: 3)
        let second = rig.setLongChain(first: 3, count: 3)
        rig.offer(first, second)
        #expect(await rig.eventually { $0.started == [first] })
        let queue = rig.queue, thread = rig.thread
        let stop = Task { @ControlActor in await queue.stop(on: thread) }
        try await Task.sleep(nanoseconds: 50_000_000)
        await rig.complete(head: first)
        #expect(await rig.eventually { $0.started == [first, second] })
        await rig.complete(head: second)
        #expect(await stop.value == 2)
        #expect(rig.usedIndex == 2)
        await rig.tearDown()
    }

    @Test @ControlActor func chainLongerThanAnyRoomBreaksTheQueue() async throws {
        let rig = try ServerTestRig(inlineSpans: 2)
        let head = rig.setLongChain(first: 0, count: 5)  // over spansPerRequest (4)
        rig.offer(head)
        #expect(await rig.eventually { _ in rig.broken.value.load(ordering: .relaxed) == 1 })
        let thread = rig.thread
        #expect(await rig.onThread { $0.started.isEmpty && thread.spanBlocks.inUseCount == 0 })
        await rig.tearDown()
    }

    @Test @ControlActor func stoppedQueueFreesItsSlotsAndTrimsThePool() async throws {
        let rig = try ServerTestRig(inlineSpans: 2)
        let heads = (0..<5).map { rig.setLongChain(first: 3 * $0, count: 3) }
        rig.guest.offer(heads)
        rig.offer()
        #expect(await rig.eventually { $0.started.count == 5 })
        #expect(rig.queue.memoryBytes.load(ordering: .relaxed) > 0)
        for head in heads { await rig.complete(head: head) }
        #expect(await rig.eventually { _ in rig.usedIndex == 5 })
        let thread = rig.thread
        #expect(await rig.onThread { _ in thread.spanBlocks.allocatedCount } == 5)
        _ = await rig.queue.stop(on: thread)
        #expect(rig.queue.memoryBytes.load(ordering: .relaxed) == 0)
        #expect(await rig.onThread { $0.slotsDiscarded } == 1)
        #expect(await rig.onThread { _ in thread.spanBlocks.allocatedCount } == IOThread.spanBlocksKeptIdle)
        await rig.tearDown()
    }
}
