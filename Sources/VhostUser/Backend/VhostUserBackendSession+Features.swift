/// Feature negotiation (GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES) and device reset.
extension VhostUserBackendSession {
    /// The virtio features offered: the device's plus vhost-user's PROTOCOL_FEATURES bit,
    /// and VHOST_F_LOG_ALL along with LOG_SHMFD (QEMU migrates only with both).
    var offeredFeatures: UInt64 {
        let logAll = offeredProtocolFeatures.contains(.logSHMFD) ? VhostUserFeatureBits.logAll : 0
        return device.deviceFeatures | VhostUserFeatureBits.protocolFeatures | logAll
    }

    var protocolFeaturesNegotiated: Bool {
        negotiatedFeatures & VhostUserFeatureBits.protocolFeatures != 0
    }

    func getFeatures() -> VhostUserRequestOutcome {
        .reply(VhostUserReply.u64(.getFeatures, offeredFeatures))
    }

    /// Exact: a bit outside GET_FEATURES' answer (e.g. a protocol feature's bit number used
    /// as a virtio bit) closes the connection. VHOST_USER_F_PROTOCOL_FEATURES is offered, so
    /// it may be set.
    /// LOG_ALL switched on or off while rings run takes effect in them before this is
    /// acknowledged (QEMU waits for the ack before it relies on the log). Switched off (a
    /// migration ended or was cancelled), the log is unmapped once no queue uses it: QEMU
    /// frees it without a word, and sends SET_LOG_BASE again before it switches LOG_ALL on.
    func setFeatures(_ features: UInt64) async -> VhostUserRequestOutcome {
        let offered = offeredFeatures
        guard features & ~offered == 0 else {
            return .fatal(Self.unofferedBits(features & ~offered, offered: offered))
        }
        let logAllChanged = (negotiatedFeatures ^ features) & VhostUserFeatureBits.logAll != 0
        negotiatedFeatures = features
        if logAllChanged {
            logger.info("dirty logging \(features & VhostUserFeatureBits.logAll != 0 ? "on" : "off") (VHOST_F_LOG_ALL)\(dirtyLog == nil ? "; no log shared yet" : "")")
            await applyDirtyLogToQueues()
            if features & VhostUserFeatureBits.logAll == 0 { dirtyLog = nil }
        }
        return .done
    }

    func getProtocolFeatures() -> VhostUserRequestOutcome {
        .reply(VhostUserReply.u64(.getProtocolFeatures, offeredProtocolFeatures.rawValue))
    }

    /// The spec lets the frontend set only bits GET_PROTOCOL_FEATURES returned. Unoffered
    /// bits close the connection, like SET_FEATURES: a REPLY_ACK error cannot be relied on
    /// here, since REPLY_ACK itself is being negotiated by this very message. The previous
    /// negotiation stays, so a reconnecting frontend starts clean either way.
    func setProtocolFeatures(_ features: UInt64) -> VhostUserRequestOutcome {
        let offered = offeredProtocolFeatures.rawValue
        guard features & ~offered == 0 else {
            return .fatal(Self.unofferedBits(features & ~offered, offered: offered))
        }
        negotiatedProtocolFeatures = VhostUserProtocolFeatures(rawValue: features)
        return .done
    }

    /// One line for the operator (after the request name): which bits, and what was offered.
    static func unofferedBits(_ bits: UInt64, offered: UInt64) -> String {
        let numbers = (0..<64).filter { bits & (1 << UInt64($0)) != 0 }.map(String.init).joined(separator: ",")
        return "set bit(s) \(numbers) (0x\(String(bits, radix: 16))) that were never offered (offered 0x\(String(offered, radix: 16))); the frontend is not following the vhost-user spec"
    }

    /// RESET_OWNER / RESET_DEVICE: every ring stops and forgets its setup; features and the
    /// inflight buffer are dropped. Memory and the backend channel stay.
    func reset() async -> VhostUserRequestOutcome {
        await stopAllQueues()
        for i in vrings.indices { vrings[i].closeFDs(); vrings[i] = VringSetup() }
        negotiatedFeatures = 0
        inflight = nil
        dirtyLog = nil
        return .done
    }
}
