import VhostUser

/// Which virtio and vhost-user protocol features the frontend accepts. Pure functions, so
/// the choices are testable without a backend.
public enum FeatureNegotiation {
    /// Device features the frontend understands and accepts whenever they are offered.
    public static let acceptedDeviceFeatures: UInt64 =
        bit(VirtioFeatureBit.version1) | bit(VirtioFeatureBit.sizeMax) | bit(VirtioFeatureBit.segMax)
        | bit(VirtioFeatureBit.blockSize) | bit(VirtioFeatureBit.flush) | bit(VirtioFeatureBit.topology)
        | bit(VirtioFeatureBit.readOnly) | bit(VirtioFeatureBit.multiQueue)
        | VhostUserFeatureBits.protocolFeatures

    /// Protocol features used when offered: MQ (GET_QUEUE_NUM), REPLY_ACK (acks checked),
    /// CONFIG (GET_CONFIG) and CONFIGURE_MEM_SLOTS (ADD_MEM_REG instead of SET_MEM_TABLE).
    public static let acceptedProtocolFeatures: VhostUserProtocolFeatures =
        [.mq, .replyAck, .config, .configureMemSlots]

    /// The feature word for SET_FEATURES, or an error naming what is missing.
    public static func deviceFeatures(offered: UInt64, options: FrontendOptions) throws(FrontendError) -> UInt64 {
        guard offered & bit(VirtioFeatureBit.version1) != 0 else {
            throw FrontendError("backend does not offer VIRTIO_F_VERSION_1 (features 0x\(String(offered, radix: 16))); legacy devices are not supported")
        }
        var wanted = acceptedDeviceFeatures
        if options.eventIndex {
            guard offered & bit(VirtioFeatureBit.ringEventIndex) != 0 else {
                throw FrontendError("--event-idx on: backend does not offer VIRTIO_F_RING_EVENT_IDX")
            }
            wanted |= bit(VirtioFeatureBit.ringEventIndex)
        }
        if options.indirectDescriptors {
            guard offered & bit(VirtioFeatureBit.ringIndirectDescriptors) != 0 else {
                throw FrontendError("--indirect on: backend does not offer VIRTIO_F_RING_INDIRECT_DESC")
            }
            wanted |= bit(VirtioFeatureBit.ringIndirectDescriptors)
        }
        if options.ringLayout == .packed {
            guard offered & bit(VirtioFeatureBit.ringPacked) != 0 else {
                throw FrontendError("packed rings wanted: backend does not offer VIRTIO_F_RING_PACKED (feature bit 34; features 0x\(String(offered, radix: 16))); use split rings, or for Spindle set packed-ring=on on the export")
            }
            wanted |= bit(VirtioFeatureBit.ringPacked)
        }
        if options.discardAndWriteZeroes {
            let both = bit(VirtioFeatureBit.discard) | bit(VirtioFeatureBit.writeZeroes)
            guard offered & both == both else {
                throw FrontendError("discard/write-zeroes wanted: backend does not offer VIRTIO_BLK_F_DISCARD and VIRTIO_BLK_F_WRITE_ZEROES (bits 13, 14)")
            }
            wanted |= both
        }
        // LOG_ALL is not acked here: it goes into SET_FEATURES only while logging (as QEMU).
        if options.dirtyLogging != .off, offered & VhostUserFeatureBits.logAll == 0 {
            throw FrontendError("dirty logging wanted: backend does not offer VHOST_F_LOG_ALL (feature bit 26; features 0x\(String(offered, radix: 16)))")
        }
        return offered & wanted
    }

    /// Also INFLIGHT_SHMFD with `inflightTracking` and LOG_SHMFD with `dirtyLogging`.
    public static func protocolFeatures(offered: UInt64, inflightTracking: Bool = false,
                                        dirtyLogging: Bool = false) -> VhostUserProtocolFeatures {
        var accepted = acceptedProtocolFeatures
        if inflightTracking { accepted.insert(.inflightSHMFD) }
        if dirtyLogging { accepted.insert(.logSHMFD) }
        return VhostUserProtocolFeatures(rawValue: offered).intersection(accepted)
    }

    @inlinable
    public static func bit(_ number: UInt64) -> UInt64 { 1 << number }
}

/// virtio feature bit numbers the frontend deals with (virtio 1.x §5.2.3 and §6).
public enum VirtioFeatureBit {
    public static let sizeMax: UInt64 = 1
    public static let segMax: UInt64 = 2
    public static let readOnly: UInt64 = 5
    public static let blockSize: UInt64 = 6
    public static let flush: UInt64 = 9
    public static let topology: UInt64 = 10
    public static let multiQueue: UInt64 = 12
    public static let discard: UInt64 = 13
    public static let writeZeroes: UInt64 = 14
    public static let ringIndirectDescriptors: UInt64 = 28
    public static let ringEventIndex: UInt64 = 29
    public static let version1: UInt64 = 32
    public static let ringPacked: UInt64 = 34
}
