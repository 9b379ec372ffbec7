/// Feature negotiation (GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES) and device reset.
extension VhostUserBackendSession {
    /// The virtio features offered: the device's plus vhost-user's PROTOCOL_FEATURES bit.
    var offeredFeatures: UInt64 { device.deviceFeatures | VhostUserFeatureBits.protocolFeatures }

    var protocolFeaturesNegotiated: Bool {
        negotiatedFeatures & VhostUserFeatureBits.protocolFeatures != 0
    }

    func getFeatures() -> VhostUserRequestOutcome {
        .reply(VhostUserReply.u64(.getFeatures, offeredFeatures))
    }

    func setFeatures(_ features: UInt64) -> VhostUserRequestOutcome {
        let offered = offeredFeatures
        guard features & ~offered == 0 else {
            return .fatal("frontend accepted features 0x\(String(features, radix: 16)) that were never offered (offered 0x\(String(offered, radix: 16)))")
        }
        negotiatedFeatures = features
        return .done
    }

    func getProtocolFeatures() -> VhostUserRequestOutcome {
        .reply(VhostUserReply.u64(.getProtocolFeatures, offeredProtocolFeatures.rawValue))
    }

    /// Bits never offered are dropped, not refused (QEMU sends only offered bits anyway).
    func setProtocolFeatures(_ features: UInt64) -> VhostUserRequestOutcome {
        negotiatedProtocolFeatures = VhostUserProtocolFeatures(rawValue: features).intersection(offeredProtocolFeatures)
        return .done
    }

    /// RESET_OWNER / RESET_DEVICE: every ring stops and forgets its setup; features and the
    /// inflight buffer are dropped. Memory and the backend channel stay.
    func reset() async -> VhostUserRequestOutcome {
        await stopAllQueues()
        for i in vrings.indices { vrings[i].closeFDs(); vrings[i] = VringSetup() }
        negotiatedFeatures = 0
        inflight = nil
        return .done
    }
}
