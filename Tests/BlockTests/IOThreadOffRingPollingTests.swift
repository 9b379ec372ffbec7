import ControlThread
import Glibc
import IOThreads
import Testing

/// A poller that never finds work.
private final class EmptyPoller: IOPoller, @unchecked Sendable {
    func pollForWork() -> Bool { false }
    func pollingBegins() {}
    func pollingEnds() -> Bool { false }
    var hasRequestsInFlight: Bool { false }
}

@Suite(.serialized) struct IOThreadOffRingPollingTests {
    /// Requests that other threads complete (rbd: librbd's threads) keep the IOThread from
    /// busy-polling while they are in flight; it polls again once they have ended.
    @Test @ControlActor func doesNotPollWhileOffRingRequestsAreInFlight() async throws {
        let thread = try IOThread(id: "t-offring", cpu: nil, pollMaxNs: 1_000_000_000)
        thread.start()
        let poller = EmptyPoller()
        thread.post { $0.addPoller(poller) }
        // Short sleeps open the adaptive window: wake the thread a few times, 1 ms apart.
        for _ in 0..<12 {
            thread.post { _ in }
            usleep(1_000)
        }
        #expect(thread.pollCurrentNs > 0)

        thread.post { $0.context.offRingRequestStarted() }
        thread.post { $0.context.offRingRequestStarted() }
        usleep(20_000)  // a poll turn begun before the posts ends within the window
        let polledBefore = thread.pollHits + thread.pollMisses
        let sleepsBefore = thread.sleeps
        for _ in 0..<12 {
            thread.post { _ in }
            usleep(1_000)
        }
        usleep(20_000)
        #expect(thread.sleeps > sleepsBefore, "the thread woke for the posted work")
        #expect(thread.pollHits + thread.pollMisses == polledBefore, "off-ring requests in flight: no polling")

        thread.post { $0.context.offRingRequestEnded() }
        thread.post { _ in }
        usleep(20_000)
        #expect(thread.pollHits + thread.pollMisses == polledBefore, "one request is still in flight")

        thread.post { $0.context.offRingRequestEnded() }
        // Wake it until it has polled again (on a busy machine one wakeup may not get the
        // thread onto a CPU at once).
        var polled = false
        for _ in 0..<250 where !polled {
            thread.post { _ in }
            usleep(20_000)
            polled = thread.pollHits + thread.pollMisses > polledBefore
        }
        #expect(polled, "none in flight: the thread polls again")

        thread.post { $0.removePoller(poller) }
        thread.stop()
    }
}
