import ControlThread
import Glibc
import IOThreads
import Synchronization
import Testing

/// A poller that never finds work; the test says whether its requests wait on the kernel.
private final class IdlePoller: IOPoller, @unchecked Sendable {
    let inFlight = Atomic<Bool>(false)
    func pollForWork() -> Bool { false }
    func pollingBegins() {}
    func pollingEnds() -> Bool { false }
    var hasRequestsInFlight: Bool { inFlight.load(ordering: .relaxed) }
}

@Suite struct PollWindowTests {
    @Test func growsFromTheInitialWindowWhileSleepsAreShort() {
        var window = PollWindow(maxNs: 100_000)
        #expect(window.currentNs == 0)
        window.record(blockedNs: 10_000)  // short sleep: open the window
        #expect(window.currentNs == PollWindow.initialNs)
        window.record(blockedNs: 10_000)
        #expect(window.currentNs == 2 * PollWindow.initialNs)
        window.record(blockedNs: 5_000)  // caught by the window: keep it
        #expect(window.currentNs == 2 * PollWindow.initialNs)
        for _ in 0..<10 { window.record(blockedNs: 90_000) }
        #expect(window.currentNs == 100_000)  // never past the maximum
    }

    @Test func closesAfterASleepLongerThanTheMaximum() {
        var window = PollWindow(maxNs: 100_000)
        window.record(blockedNs: 10_000)
        window.record(blockedNs: 1_000_000)
        #expect(window.currentNs == 0)
        var halving = PollWindow(maxNs: 100_000, shrink: 2)
        for _ in 0..<3 { halving.record(blockedNs: 50_000) }
        halving.record(blockedNs: 1_000_000)
        #expect(halving.currentNs == 8_000)
    }

    @Test func aZeroMaximumNeverPolls() {
        var window = PollWindow(maxNs: 0)
        window.record(blockedNs: 1)
        #expect(window.currentNs == 0)
    }
}

@Suite(.serialized) struct IOThreadPollingTests {
    /// While polling, the thread gives the CPU away only when a poller's requests wait on the
    /// kernel (io_uring's workers may need this CPU to finish them).
    @Test @ControlActor func yieldsWhilePollingOnlyWhenRequestsWaitOnTheKernel() async throws {
        let thread = try IOThread(id: "t-yield", cpu: nil, pollMaxNs: 1_000_000_000)
        thread.start()
        let poller = IdlePoller()
        thread.post { $0.addPoller(poller) }
        // Short sleeps open the adaptive window: wake the thread a few times, 1 ms apart.
        for _ in 0..<12 {
            thread.post { _ in }
            usleep(1_000)
        }
        #expect(thread.pollCurrentNs > 0)
        let yieldsIdle = thread.pollYields
        thread.post { _ in }
        usleep(20_000)
        #expect(thread.pollYields == yieldsIdle, "no request in flight: polling must not yield")

        poller.inFlight.store(true, ordering: .relaxed)
        // Wake it until it has polled with the request in flight: on a busy machine one wakeup
        // may not get the thread onto a CPU within 20 ms (seen failing under load).
        var yielded = false
        for _ in 0..<250 where !yielded {
            thread.post { _ in }
            usleep(20_000)
            yielded = thread.pollYields > yieldsIdle
        }
        #expect(yielded, "requests in flight: polling must yield")

        thread.post { $0.removePoller(poller) }
        thread.stop()
    }
}
