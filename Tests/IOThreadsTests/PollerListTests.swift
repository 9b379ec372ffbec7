import ControlThread
import Glibc
@testable import IOThreads
import Synchronization
import Testing

/// Records the order in which a walk calls it; may change the list from its own call.
private final class RecordingPoller: IOPoller {
    let name: String
    var log: [String]
    var onPoll: (() -> Void)?
    init(_ name: String, log: [String] = []) { self.name = name; self.log = log }
    func pollForWork() -> Bool { log.append(name); onPoll?(); return false }
    func pollingBegins() {}
    func pollingEnds() -> Bool { false }
    var hasRequestsInFlight: Bool { false }
}

/// Unregisters itself (and removes itself as a poller) from its own completion, and still
/// touches its own state afterwards: the thread must keep it alive until that call returns.
private final class SelfUnregisteringHandler: IOCompletionHandler, IOPoller, @unchecked Sendable {
    var id: HandlerID?
    unowned(unsafe) var thread: IOThread?
    func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
        guard let id, let thread else { return }
        thread.removePoller(self)
        thread.unregister(id)
        self.id = nil
    }
    func endOfBatch() {}
    func pollForWork() -> Bool { false }
    func pollingBegins() {}
    func pollingEnds() -> Bool { false }
    var hasRequestsInFlight: Bool { false }
}

private final class WeakHandler: @unchecked Sendable {
    weak var handler: SelfUnregisteringHandler?
}

@Suite struct PollerListTests {
    @Test func aWalkCallsEachPollerOnceInTheOrderAdded() {
        let list = PollerList(capacity: 8, what: "test")
        let a = RecordingPoller("a"), b = RecordingPoller("b"), c = RecordingPoller("c")
        for poller in [a, b, c] { list.add(poller) }
        var seen: [String] = []
        list.forEach { poller in _ = poller.pollForWork(); seen.append((poller as! RecordingPoller).name) }
        #expect(seen == ["a", "b", "c"])
        list.remove(b)
        seen.removeAll()
        list.forEach { seen.append(($0 as! RecordingPoller).name) }
        #expect(seen == ["a", "c"])
        #expect(list.count == 2)
    }

    /// As with the array the walk used to copy: a poller removed or added by a poller's own
    /// call is still walked (or not yet walked) by the walk under way; the next walk sees it.
    @Test func changesMadeDuringAWalkApplyWhenItEnds() {
        let list = PollerList(capacity: 8, what: "test")
        let a = RecordingPoller("a"), b = RecordingPoller("b"), c = RecordingPoller("c"), d = RecordingPoller("d")
        for poller in [a, b, c] { list.add(poller) }
        a.onPoll = { [unowned a] in list.remove(a); list.remove(b); list.add(d) }
        var seen: [String] = []
        list.forEach { poller in _ = poller.pollForWork(); seen.append((poller as! RecordingPoller).name) }
        #expect(seen == ["a", "b", "c"])
        seen.removeAll()
        list.forEach { seen.append(($0 as! RecordingPoller).name) }
        #expect(seen == ["c", "d"])
    }
}

@Suite(.serialized) struct HandlerLifetimeTests {
    /// The thread's table holds handlers without retaining them per call: one that
    /// unregisters itself from its own completion, with nobody else holding it, must finish
    /// that call, and is let go once the loop comes round.
    @Test @ControlActor func aHandlerUnregisteringItselfFinishesItsCallAndIsThenReleased() async throws {
        let thread = try IOThread(id: "t-lifetime", cpu: nil)
        thread.start()
        defer { thread.stop() }
        let weak = WeakHandler()
        let timeout = TimeoutStorage()
        thread.runAndWait { thread in
            let handler = SelfUnregisteringHandler()
            weak.handler = handler
            handler.thread = thread
            let id = thread.register(handler)
            handler.id = id
            thread.addPoller(handler)
            thread.queueTimeout(milliseconds: 5, token: CompletionToken(handler: id, tag: 1), storage: timeout)
        }
        #expect(eventually {
            // A no-op turn of the loop releases what was unregistered on the previous one.
            thread.runAndWait { _ in weak.handler == nil }
        })
    }
}
