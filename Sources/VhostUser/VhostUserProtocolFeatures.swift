/// The vhost-user protocol feature word exchanged with GET/SET_PROTOCOL_FEATURES.
/// Bit numbers as in vhost-user.rst ("Protocol features").
public struct VhostUserProtocolFeatures: OptionSet, Sendable, Hashable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let mq = bit(0)
    public static let logSHMFD = bit(1)
    public static let rarp = bit(2)
    public static let replyAck = bit(3)
    public static let mtu = bit(4)
    /// Formerly SLAVE_REQ: the back-end channel (SET_BACKEND_REQ_FD).
    public static let backendReq = bit(5)
    public static let crossEndian = bit(6)
    public static let cryptoSession = bit(7)
    public static let pagefault = bit(8)
    /// GET_CONFIG / SET_CONFIG and BACKEND_CONFIG_CHANGE_MSG.
    public static let config = bit(9)
    /// Formerly SLAVE_SEND_FD.
    public static let backendSendFD = bit(10)
    public static let hostNotifier = bit(11)
    public static let inflightSHMFD = bit(12)
    public static let resetDevice = bit(13)
    public static let inbandNotifications = bit(14)
    /// GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG.
    public static let configureMemSlots = bit(15)
    public static let status = bit(16)
    public static let xenMmap = bit(17)
    public static let sharedObject = bit(18)
    public static let deviceState = bit(19)

    private static func bit(_ n: UInt64) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures(rawValue: 1 << n)
    }

    /// Spec names (without `VHOST_USER_PROTOCOL_F_`) of the bits set, lowest first;
    /// unnamed bits appear as `bit N`. For log lines.
    public var names: [String] {
        var result: [String] = []
        for bitNumber in 0..<64 where rawValue & (UInt64(1) << UInt64(bitNumber)) != 0 {
            if bitNumber < Self.bitNames.count {
                result.append(Self.bitNames[bitNumber])
            } else {
                result.append("bit \(bitNumber)")
            }
        }
        return result
    }

    private static let bitNames = [
        "MQ", "LOG_SHMFD", "RARP", "REPLY_ACK", "MTU", "BACKEND_REQ", "CROSS_ENDIAN",
        "CRYPTO_SESSION", "PAGEFAULT", "CONFIG", "BACKEND_SEND_FD", "HOST_NOTIFIER",
        "INFLIGHT_SHMFD", "RESET_DEVICE", "INBAND_NOTIFICATIONS", "CONFIGURE_MEM_SLOTS",
        "STATUS", "XEN_MMAP", "SHARED_OBJECT", "DEVICE_STATE",
    ]
}

/// vhost-user's use of the virtio (device) feature word from GET/SET_FEATURES.
public enum VhostUserFeatureBits {
    /// `VHOST_USER_F_PROTOCOL_FEATURES`: bit 30 of the virtio feature word (a bit virtio
    /// reserves and never offers to drivers). Set by a back-end that supports
    /// GET/SET_PROTOCOL_FEATURES.
    public static let protocolFeatures: UInt64 = 1 << 30
    /// `VHOST_F_LOG_ALL` (bit 26): the front-end wants dirty-page logging for migration.
    public static let logAll: UInt64 = 1 << 26
}
