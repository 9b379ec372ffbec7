import ControlThread
import CSpindle
import Glibc
@testable import IOThreads
import Testing

@Suite(.serialized) struct HandlerGenerationTests {
    /// A's timeout completes after A was unregistered and B took A's slot: B must not see it.
    @Test @ControlActor func aLateCompletionNeverReachesTheSlotsNextHandler() async throws {
        let thread = try IOThread(id: "t-generation", cpu: nil)
        thread.start()
        defer { thread.stop() }
        let first = CountingHandler(), second = CountingHandler()
        let timeout = TimeoutStorage()
        let (a, b) = thread.runAndWait { thread -> (HandlerID, HandlerID) in
            let a = thread.register(first)
            thread.queueTimeout(milliseconds: 20, token: CompletionToken(handler: a, tag: 5), storage: timeout)
            thread.unregister(a)
            let b = thread.register(second)
            return (a, b)
        }
        #expect(a.index == b.index, "the slot is reused")
        #expect(a.generation != b.generation)
        usleep(100_000)  // the timeout has fired by now
        #expect(first.seen == 0 && second.seen == 0, "a late completion was delivered")

        // B's own completions still arrive.
        thread.runAndWait { thread in
            thread.queueTimeout(milliseconds: 1, token: CompletionToken(handler: b, tag: 6), storage: timeout)
        }
        #expect(eventually { second.seen == 1 })
        #expect(second.lastTag.load(ordering: .relaxed) == 6)
        thread.runAndWait { $0.unregister(b) }
    }

    @Test func aTokenCarriesIndexGenerationAndTag() {
        let id = HandlerID(index: 4095, generation: 0xBEEF)
        let token = CompletionToken(handler: id, tag: CompletionToken.maxTag)
        #expect(token.handler == id)
        #expect(token.tag == CompletionToken.maxTag)
        #expect(CompletionToken(rawValue: token.rawValue) == token)
    }
}
