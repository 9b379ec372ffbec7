import BlockIO
import ControlThread
import Testing

/// Requests refused while a BlockBackend is quiesced (an inactive node whose queue the
/// IOThread polls: one refusal per spin, for as long as the node waits) must not change the
/// drain waiter: each refusal reads it, and a read that re-wrapped it nested it deeper every
/// time, until calling or releasing it overflowed the stack (the rbd lock wait's crash).
@Suite struct DrainWaiterNestingTests {
    @Test @ControlActor func refusedRequestsWhileQuiescedLeaveTheWaiterAsItWas() {
        let backend = BlockBackend(name: "nest0", permissions: [])
        _ = backend.beginQuiesce(onDrained: {})
        var admitted = 0
        for _ in 0..<3_000_000 where backend.beginRequest() { admitted += 1 }
        #expect(admitted == 0)
        #expect(backend.endQuiesce())
        #expect(backend.beginRequest())
        backend.endRequest()
    }
}
