import ControlThread
import Glibc
import SpindleTestSupport
import Testing
@testable import VhostUser

/// SET_VRING_KICK with NOFD (bit 8): the ring starts without a kick eventfd (the device's
/// queue gets -1 and polls), stops for GET_VRING_BASE and starts again like any other.
@Suite(.serialized) struct KicklessRingSessionTests {
    @Test @ControlActor func aKicklessRingStartsStopsAndStartsAgain() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        fixture.device.requestsTakenBeforeStop = 2
        let frontend = try fixture.connectSocketpair()
        let ring = try RawRing()
        try await onThreadOfItsOwn { try ring.start(on: frontend, features: FakeDevice.version1, base: 5, kickless: true) }
        #expect(await fixture.eventually { fixture.device.queues.first?.events.isEmpty == false })
        let first = try #require(fixture.device.queues.first)
        #expect(first.kickFD == -1 && first.callFD >= 0)
        #expect(first.ringBase == 5)
        let session = try #require(fixture.session)
        #expect(session.vrings[0].started && session.vrings[0].kickFD == nil)

        let reply = try await onThreadOfItsOwn {
            try VhostUserReplyDecoder.vringState(try frontend.call(.getVringBase(VhostUserVringState(index: 0, num: 0))),
                                                 to: .getVringBase)
        }
        #expect(reply == VhostUserVringState(index: 0, num: 7))
        #expect(first.events.contains(.stopped(iothread: "session-test")))
        #expect(session.vrings[0].running == nil && !session.vrings[0].started)

        try await onThreadOfItsOwn { try ring.restart(on: frontend, base: 7, kickless: true) }
        #expect(await fixture.eventually { fixture.device.queues.count == 2 && fixture.device.queues[1].events.isEmpty == false })
        let second = fixture.device.queues[1]
        #expect(second.kickFD == -1 && second.ringBase == 7)
        #expect(session.isClosed == false)
        await fixture.tearDown()
    }
}
