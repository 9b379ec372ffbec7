import ControlThread
import CSpindle
import Glibc
@testable import IOThreads
import Testing

@Suite(.serialized) struct CompletionReservationTests {
    @Test func aReservationThatDoesNotFitIsRefused() throws {
        let context = try IOContext(entries: 4, completionEntries: 16)
        #expect(context.completionEntries == 16)
        #expect(context.reserveCompletions(10))
        #expect(!context.reserveCompletions(7), "10 + 7 entries do not fit in 16")
        #expect(context.reserveCompletions(6))
        #expect(context.completionsReserved == 16)
        context.releaseCompletions(10)
        #expect(context.reserveCompletions(7))
    }

    @Test @ControlActor func anIOThreadSaysWhichThreadIsFull() async throws {
        let thread = try IOThread(id: "t-full", cpu: nil, ringEntries: 4)
        // 64 entries, one of them the inbox's.
        #expect(thread.context.completionEntries == 4 * Int(IOThread.completionsPerSubmission))
        #expect(throws: Never.self) { try thread.reserveCompletions(60) }
        #expect(throws: CompletionQueueFull.self) { try thread.reserveCompletions(4) }
        do {
            try thread.reserveCompletions(4)
        } catch {
            #expect(error.description.contains("iothread 't-full'"))
            #expect(error.free == 3 && error.needed == 4)
        }
    }

    /// A handler whose reservation fits submits far more than the SQ holds at once: a full SQ
    /// is submitted and retried, and every completion arrives.
    @Test @ControlActor func handlersThatFitAreServedPastAFullSubmissionQueue() async throws {
        let thread = try IOThread(id: "t-served", cpu: nil, ringEntries: 4)
        thread.start()
        defer { thread.stop() }
        let handler = CountingHandler()
        try thread.reserveCompletions(40)
        let failures = thread.runAndWait { thread -> Int in
            let id = thread.register(handler)
            var failures = 0
            for tag in 0..<40 {
                guard let sqe = thread.context.sqe() else { failures += 1; continue }
                io_uring_prep_nop(sqe)
                sqe.pointee.user_data = CompletionToken(handler: id, tag: UInt64(tag)).rawValue
            }
            return failures
        }
        #expect(failures == 0)
        #expect(eventually { handler.seen == 40 })
        #expect(throws: CompletionQueueFull.self) { try thread.reserveCompletions(40) }
    }
}
