import CSpindle
import Glibc

/// The backend channel (BACKEND_REQ): a socket for messages from us to the frontend.
extension VhostUserBackendSession {
    func setBackendChannel(_ channel: Int32) -> VhostUserRequestOutcome {
        if let old = backendChannelFD { Glibc.close(old) }
        backendChannelFD = channel
        return .done
    }

    /// Tells the frontend the config space changed (BACKEND_CONFIG_CHANGE_MSG on the backend
    /// channel) so it raises the guest's config interrupt. Never waits for a reply: QEMU
    /// answers with a GET_CONFIG on the main socket while it handles this message.
    /// false without a backend channel (or CONFIG) or if sending failed.
    public func notifyConfigChange() -> Bool {
        guard !closed, let channel = backendChannelFD,
              negotiatedProtocolFeatures.contains(.config), negotiatedProtocolFeatures.contains(.backendReq) else { return false }
        let message = VhostUserBackendMessage.configChange(needReply: false)
        let bytes = message.encoded
        let rc = bytes.withUnsafeBytes { spindle_send_with_fds(channel, $0.baseAddress, $0.count, nil, 0) }
        if rc != bytes.count {
            logger.warning("cannot send CONFIG_CHANGE_MSG on the backend channel: \(rc < 0 ? String(cString: strerror(Int32(-rc))) : "short write")")
            return false
        }
        return true
    }
}
