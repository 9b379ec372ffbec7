/// The device's config space (CONFIG): GET_CONFIG and SET_CONFIG, answered by the device.
extension VhostUserBackendSession {
    func getConfig(_ window: VhostUserConfigSpace) -> VhostUserRequestOutcome {
        guard let bytes = device.readConfig(offset: Int(window.offset), size: Int(window.size)) else {
            logger.warning("GET_CONFIG outside the config space (offset \(window.offset), size \(window.size))")
            return .reply(VhostUserReply.configFailure())
        }
        return .reply(VhostUserReply.config(VhostUserConfigSpace(offset: window.offset, flags: window.flags, payload: bytes)))
    }

    func setConfig(_ window: VhostUserConfigSpace) -> VhostUserRequestOutcome {
        guard device.writeConfig(offset: Int(window.offset), bytes: window.payload, negotiatedFeatures: negotiatedFeatures) else {
            return .failed("SET_CONFIG of \(window.size) bytes at offset \(window.offset) touches read-only config fields")
        }
        return .done
    }
}
