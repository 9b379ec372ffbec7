import ControlThread
import Glibc
@testable import IOThreads
import Testing

@ControlActor
func startedThread(_ id: String) throws -> IOThread {
    let thread = try IOThread(id: id, cpu: nil, ringEntries: 4)
    thread.start()
    return thread
}

@Suite struct ThreadConfinementTests {
    @Test @ControlActor func anIOThreadKnowsItsOwnThread() async throws {
        let thread = try startedThread("t-self")
        defer { thread.stop() }
        #expect(!thread.isCurrent)
        #expect(thread.runAndWait { $0.isCurrent })
        let handler = CountingHandler()
        // Its own methods work on it.
        thread.runAndWait { thread in
            let id = thread.register(handler)
            thread.scheduleEndOfBatch(id)
            _ = thread.context.sqe()
            thread.unregister(id)
        }
    }

    #if DEBUG
    /// Debug builds trap when an IOThread's own method is called from another thread.
    @Test func registeringFromAnotherThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            let thread = try await startedThread("t-trap")
            _ = thread.register(CountingHandler())
        }
    }

    @Test func takingAnSQEFromAnotherThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            let thread = try await startedThread("t-trap-sqe")
            _ = thread.context.sqe()
        }
    }
    #endif
}
