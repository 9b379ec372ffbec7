import Testing
@testable import SpindleDaemon

@Suite struct QueuePlacementTableTests {
    let e0q0 = QueueKey(export: "e0", queue: 0)
    let e0q1 = QueueKey(export: "e0", queue: 1)
    let e1q0 = QueueKey(export: "e1", queue: 0)

    @Test func startedQueuesShowOnTheirThreadSortedAsText() {
        var table = QueuePlacementTable()
        table.started(QueueKey(export: "e0", queue: 10), on: "iot0")
        table.started(QueueKey(export: "e0", queue: 2), on: "iot0")
        table.started(e1q0, on: "iot1")
        // Sorted as strings, as query-iothreads has always shown them.
        #expect(table.queueNames(servedBy: "iot0") == ["e0/10", "e0/2"])
        #expect(table.queueNames(servedBy: "iot1") == ["e1/0"])
        #expect(table.queueNames(servedBy: "iot2") == [])
        #expect(table.placement(of: e1q0) == .init(thread: "iot1", automaticCPU: nil))
    }

    @Test func stopRemovesTheQueueAndReturnsItsPlacement() {
        var table = QueuePlacementTable()
        table.started(e0q0, on: "auto-cpu1", automaticCPU: 1)
        table.started(e0q1, on: "auto-cpu1", automaticCPU: 1)
        #expect(table.stopped(e0q0, on: "auto-cpu1") == .init(thread: "auto-cpu1", automaticCPU: 1))
        #expect(table.queueNames(servedBy: "auto-cpu1") == ["e0/1"])
        #expect(table.placement(of: e0q0) == nil)
        // A second stop of the same queue changes nothing.
        #expect(table.stopped(e0q0, on: "auto-cpu1") == nil)
    }

    @Test func moveLeavesTheQueueOnlyOnItsNewThread() {
        var table = QueuePlacementTable()
        table.started(e0q0, on: "iot0")
        #expect(table.moved(e0q0, to: "iot1") == .init(thread: "iot0", automaticCPU: nil))
        #expect(table.queueNames(servedBy: "iot0") == [])
        #expect(table.queueNames(servedBy: "iot1") == ["e0/0"])
    }

    @Test func moveAfterTheOldThreadsStopRecordsTheNewThread() {
        // x-queue-move's order: the queue stops on its old thread, then starts on the new one.
        var table = QueuePlacementTable()
        table.started(e0q0, on: "auto-cpu0", automaticCPU: 0)
        #expect(table.stopped(e0q0, on: "auto-cpu0")?.automaticCPU == 0)
        #expect(table.moved(e0q0, to: "iot1") == nil)
        #expect(table.placement(of: e0q0) == .init(thread: "iot1", automaticCPU: nil))
    }

    @Test func stopAfterAMoveRemovesTheQueueFromItsNewThread() {
        var table = QueuePlacementTable()
        table.started(e0q0, on: "iot0")
        table.moved(e0q0, to: "iot1")
        #expect(table.stopped(e0q0, on: "iot1") == .init(thread: "iot1", automaticCPU: nil))
        #expect(table.queueNames(servedBy: "iot0") == [] && table.queueNames(servedBy: "iot1") == [])
    }

    @Test func staleStopFromTheOldThreadIsIgnored() {
        var table = QueuePlacementTable()
        table.started(e0q0, on: "iot0")
        table.moved(e0q0, to: "iot1")
        #expect(table.stopped(e0q0, on: "iot0") == nil)
        #expect(table.queueNames(servedBy: "iot1") == ["e0/0"])
        // A stop for a queue never started is stale too.
        #expect(table.stopped(e1q0, on: "iot1") == nil)
        #expect(table.queueNames(servedBy: "iot1") == ["e0/0"])
    }

    @Test func restartOnAnotherThreadReplacesTheOldEntry() {
        var table = QueuePlacementTable()
        table.started(e0q0, on: "auto-cpu0", automaticCPU: 0)
        #expect(table.started(e0q0, on: "auto-cpu1", automaticCPU: 1) == .init(thread: "auto-cpu0", automaticCPU: 0))
        #expect(table.queueNames(servedBy: "auto-cpu0") == [])
        #expect(table.queueNames(servedBy: "auto-cpu1") == ["e0/0"])
    }
}
