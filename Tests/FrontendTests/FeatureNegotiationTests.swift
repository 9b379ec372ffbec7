import Testing
import VhostUser
@testable import VhostUserFrontend

@Suite struct FeatureNegotiationTests {
    let version1 = FeatureNegotiation.bit(VirtioFeatureBit.version1)
    let eventIndex = FeatureNegotiation.bit(VirtioFeatureBit.ringEventIndex)
    let indirect = FeatureNegotiation.bit(VirtioFeatureBit.ringIndirectDescriptors)

    @Test func acceptsOnlyWhatItUnderstands() throws {
        let discard: UInt64 = 1 << 13
        let offered = version1 | eventIndex | indirect | discard | VhostUserFeatureBits.protocolFeatures
        let plain = try FeatureNegotiation.deviceFeatures(offered: offered, options: FrontendOptions(eventIndex: false))
        #expect(plain == version1 | VhostUserFeatureBits.protocolFeatures)
        let both = try FeatureNegotiation.deviceFeatures(offered: offered, options: FrontendOptions(eventIndex: true, indirectDescriptors: true))
        #expect(both == version1 | eventIndex | indirect | VhostUserFeatureBits.protocolFeatures)
    }

    @Test func refusesMissingFeatures() {
        #expect(throws: FrontendError.self) {
            try FeatureNegotiation.deviceFeatures(offered: eventIndex, options: FrontendOptions())
        }
        #expect(throws: FrontendError.self) {
            try FeatureNegotiation.deviceFeatures(offered: version1, options: FrontendOptions(eventIndex: true))
        }
        #expect(throws: FrontendError.self) {
            try FeatureNegotiation.deviceFeatures(offered: version1, options: FrontendOptions(eventIndex: false, indirectDescriptors: true))
        }
    }

    @Test func protocolFeaturesAreIntersected() {
        let offered: VhostUserProtocolFeatures = [.mq, .replyAck, .backendReq, .config, .inflightSHMFD, .configureMemSlots]
        #expect(FeatureNegotiation.protocolFeatures(offered: offered.rawValue) == [.mq, .replyAck, .config, .configureMemSlots])
    }

    @Test func queueSizeFitsTheSlots() throws {
        #expect(FrontendOptions(slotsPerQueue: 1).effectiveQueueSize == 64)
        #expect(FrontendOptions(slotsPerQueue: 32).effectiveQueueSize == 128)
        #expect(FrontendOptions(slotsPerQueue: 32, indirectDescriptors: true).effectiveQueueSize == 64)
        #expect(FrontendOptions(slotsPerQueue: 128).effectiveQueueSize == 512)
        #expect(throws: FrontendError.self) { try FrontendOptions(slotsPerQueue: 32, queueSize: 64).validate() }
        #expect(throws: FrontendError.self) { try FrontendOptions(maxRequestBytes: 1000).validate() }
        try FrontendOptions(slotsPerQueue: 128, maxRequestBytes: 1 << 20).validate()
    }
}
