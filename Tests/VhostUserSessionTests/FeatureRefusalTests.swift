import ControlThread
import Glibc
import SpindleTestSupport
import Testing
@testable import VhostUser

/// Bits the backend never offered are refused by closing the connection, in SET_FEATURES
/// and SET_PROTOCOL_FEATURES alike; the bits that were offered are taken exactly.
@Suite(.serialized) struct FeatureRefusalTests {
    @Test @ControlActor func aProtocolFeatureNeverOfferedEndsTheSession() async throws {
        let device = FakeDevice()
        device.withheldProtocolFeatures = [.inflightSHMFD]
        let fixture = try SessionFixture(device: device)
        let frontend = try fixture.connectSocketpair()
        let offered = try await onThreadOfItsOwn {
            try VhostUserReplyDecoder.u64(try frontend.call(.getProtocolFeatures), to: .getProtocolFeatures)
        }
        #expect(offered & VhostUserProtocolFeatures.inflightSHMFD.rawValue == 0)
        let hungUp = try await onThreadOfItsOwn {
            try frontend.send(.setProtocolFeatures(offered | VhostUserProtocolFeatures.inflightSHMFD.rawValue))
            return frontend.sessionHungUp()
        }
        #expect(hungUp)
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        #expect(fixture.session?.isClosed == true)
        #expect(fixture.session?.negotiatedProtocolFeatures == [])  // nothing was taken
        await fixture.tearDown()
    }

    @Test @ControlActor func offeredProtocolFeaturesAreTakenExactly() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let wanted: VhostUserProtocolFeatures = [.replyAck, .config]
        let acked = try await onThreadOfItsOwn {
            try frontend.send(.setProtocolFeatures(wanted.rawValue))
            // REPLY_ACK is on now: a GET answers, the session stays.
            return try VhostUserReplyDecoder.u64(try frontend.call(.getFeatures), to: .getFeatures)
        }
        #expect(acked != 0)
        #expect(fixture.session?.negotiatedProtocolFeatures == wanted)
        #expect(fixture.session?.isClosed == false)
        await fixture.tearDown()
    }

    /// VHOST_USER_F_PROTOCOL_FEATURES (bit 30) is offered and may be set; a protocol
    /// feature's bit number (MQ, 0) used as a virtio bit was never offered.
    @Test @ControlActor func setFeaturesIsExact() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let protocolBit = VhostUserFeatureBits.protocolFeatures
        let mqBit: UInt64 = 1 << 0
        #expect(fixture.device.deviceFeatures & mqBit == 0)
        try await onThreadOfItsOwn { try frontend.send(.setFeatures(FakeDevice.version1 | protocolBit)) }
        #expect(await fixture.eventually { fixture.session?.negotiatedFeatures == FakeDevice.version1 | protocolBit })
        let hungUp = try await onThreadOfItsOwn {
            try frontend.send(.setFeatures(FakeDevice.version1 | mqBit))
            return frontend.sessionHungUp()
        }
        #expect(hungUp)
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        await fixture.tearDown()
    }
}
