import ControlThread
import Glibc
import Testing
@testable import Virtqueues

/// The generic virtqueue server with a fake device on a real IOThread and a split ring in
/// test memory: requests taken once, completed once, in any order, held back by a full slot
/// table, waited for by stop, and a corrupt chain breaking the queue.
@Suite(.serialized) struct VirtqueueServerTests {
    @Test @ControlActor func eachRequestCompletesExactlyOnce() async throws {
        let rig = try ServerTestRig()
        for head: UInt16 in 0..<4 { rig.setDescriptor(head) }
        rig.offer(0, 1, 2, 3)
        #expect(await rig.eventually { $0.started.count == 4 })
        for head: UInt16 in 0..<4 { await rig.complete(head: head, times: 2) }
        #expect(await rig.eventually { $0.completions == 8 })
        #expect(await rig.onThread { _ in true })  // one more turn: the batch is published
        let used = await rig.onThread { _ in rig.used.map(\.head) }
        #expect(used.sorted() == [0, 1, 2, 3])
        #expect(await rig.onThread { $0.released.count } == 4)
        #expect(await rig.onThread { $0.busyPeriodsBegun == $0.busyPeriodsEnded })
        await rig.tearDown()
    }

    @Test @ControlActor func completionsGoOutInTheOrderTheyCome() async throws {
        let rig = try ServerTestRig()
        for head: UInt16 in 0..<3 { rig.setDescriptor(head) }
        rig.offer(0, 1, 2)
        #expect(await rig.eventually { $0.started == [0, 1, 2] })
        for head: UInt16 in [2, 0, 1] {
            await rig.complete(head: head)
            #expect(await rig.eventually { _ in rig.used.last?.head == UInt32(head) })
        }
        let used = await rig.onThread { _ in rig.used }
        #expect(used.map(\.head) == [2, 0, 1])
        #expect(used.map(\.length) == [102, 100, 101])
        await rig.tearDown()
    }

    @Test @ControlActor func requestsAnsweredAtOnceAreUsedAtOnce() async throws {
        let rig = try ServerTestRig()
        await rig.onThread { $0.finishAtOnce = true }
        for head: UInt16 in 0..<10 { rig.setDescriptor(head) }
        rig.offer(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)  // more than one pass (8 per pass)
        #expect(await rig.eventually { _ in rig.usedIndex == 10 })
        let used = await rig.onThread { _ in rig.used.map(\.head) }
        #expect(used == Array(0..<10))
        await rig.tearDown()
    }

    @Test @ControlActor func stopWaitsForRequestsInFlight() async throws {
        let rig = try ServerTestRig()
        rig.setDescriptor(0)
        rig.setDescriptor(1)
        rig.offer(0, 1)
        #expect(await rig.eventually { $0.started.count == 2 })
        let stopped = Flag()
        let queue = rig.queue
        let thread = rig.thread
        let stop = Task { @ControlActor in
            let base = await queue.stop(on: thread)
            stopped.value.store(1, ordering: .releasing)
            return base
        }
        try await Task.sleep(nanoseconds: 100_000_000)
        #expect(stopped.value.load(ordering: .acquiring) == 0)
        await rig.complete(head: 1)
        try await Task.sleep(nanoseconds: 50_000_000)
        #expect(stopped.value.load(ordering: .acquiring) == 0)
        await rig.complete(head: 0)
        #expect(await stop.value == 2)
        #expect(rig.usedIndex == 2)
        // Stopped: new requests stay in the ring.
        rig.setDescriptor(2)
        rig.offer(2)
        try await Task.sleep(nanoseconds: 50_000_000)
        #expect(await rig.onThread { $0.started.count } == 2)
        await rig.tearDown()
    }

    @Test @ControlActor func aFullSlotTableHoldsRequestsBackAndResumes() async throws {
        let rig = try ServerTestRig(slots: 2)
        for head: UInt16 in 0..<4 { rig.setDescriptor(head) }
        rig.offer(0, 1, 2, 3)
        #expect(await rig.eventually { $0.started == [0, 1] })
        try await Task.sleep(nanoseconds: 50_000_000)
        #expect(await rig.onThread { $0.started.count } == 2)
        await rig.complete(head: 1)
        #expect(await rig.eventually { $0.started == [0, 1, 2] })
        await rig.complete(head: 0)
        #expect(await rig.eventually { $0.started == [0, 1, 2, 3] })
        await rig.complete(head: 2)
        await rig.complete(head: 3)
        #expect(await rig.eventually { _ in rig.usedIndex == 4 })
        await rig.tearDown()
    }

    @Test @ControlActor func aQuiescedBackendHoldsRequestsUntilResumed() async throws {
        let rig = try ServerTestRig()
        await rig.onThread { $0.quiesced = true }
        rig.setDescriptor(0)
        rig.offer(0)
        try await Task.sleep(nanoseconds: 50_000_000)
        #expect(await rig.onThread { $0.started.isEmpty })
        let queue = rig.queue
        await rig.onThread { handler in
            handler.quiesced = false
            queue.resumeAfterDrain()
        }
        #expect(await rig.eventually { $0.started == [0] })
        await rig.complete(head: 0)
        #expect(await rig.eventually { _ in rig.usedIndex == 1 })
        await rig.tearDown()
    }

    @Test @ControlActor func theInflightRegionMarksWhatIsTakenUntilItIsUsed() async throws {
        let rig = try ServerTestRig(inflight: true)
        for head: UInt16 in 0..<3 { rig.setDescriptor(head) }
        rig.offer(0, 1, 2)
        #expect(await rig.eventually { $0.started == [0, 1, 2] })
        #expect(await rig.onThread { _ in (0..<3).map { rig.inflightFlag($0) } } == [1, 1, 1])
        await rig.complete(head: 1)
        #expect(await rig.eventually { _ in rig.usedIndex == 1 })
        #expect(await rig.onThread { _ in (0..<3).map { rig.inflightFlag($0) } } == [1, 0, 1])
        #expect(await rig.onThread { _ in rig.inflightUsedIndex } == 1)
        await rig.complete(head: 0)
        await rig.complete(head: 2)
        #expect(await rig.eventually { _ in rig.usedIndex == 3 })
        #expect(await rig.onThread { _ in (0..<3).map { rig.inflightFlag($0) } } == [0, 0, 0])
        await rig.tearDown()
    }

    @Test @ControlActor func aCorruptChainMarksTheQueueBroken() async throws {
        let rig = try ServerTestRig()
        rig.setDescriptor(0)
        rig.setDescriptor(1, nextOutOfRange: true)
        rig.offer(0, 1)
        #expect(await rig.eventually { _ in rig.broken.value.load(ordering: .relaxed) == 1 })
        #expect(await rig.onThread { $0.started } == [0])
        // The request taken before the corruption still completes; the broken one never does.
        await rig.complete(head: 0)
        #expect(await rig.eventually { _ in rig.usedIndex == 1 })
        #expect(await rig.onThread { $0.released.count } == 1)
        await rig.tearDown()
    }

    @Test @ControlActor func anUnanswerableRequestMarksTheQueueBroken() async throws {
        let rig = try ServerTestRig()
        rig.setDescriptor(0, writable: false)
        rig.offer(0)
        #expect(await rig.eventually { _ in rig.broken.value.load(ordering: .relaxed) == 1 })
        #expect(rig.usedIndex == 0)
        await rig.tearDown()
    }
}
