import ControlThread
import IOThreads
import VhostUser

/// A virtio-blk device as a vhost-user backend session sees it (`VhostUserDevice`): its
/// features, queue count and config space come from `VirtioBlkDevice`, its queues are
/// `VirtioBlkQueue`s. virtio-blk has no device-specific vhost-user messages.
@ControlActor
public final class VirtioBlkVhostUserDevice: VhostUserDevice {
    public let device: VirtioBlkDevice
    public let withheldProtocolFeatures: VhostUserProtocolFeatures
    public let marksDirtyPages: Bool
    /// Whether VIRTIO_F_RING_PACKED is offered (the export's packed-ring key).
    public let offersPackedRing: Bool

    /// `withheldProtocolFeatures`: e.g. INFLIGHT_SHMFD for an export without crash recovery.
    /// `marksDirtyPages` false: the x-dirty-log=unmarked test hook.
    public init(device: VirtioBlkDevice, withheldProtocolFeatures: VhostUserProtocolFeatures = [],
                marksDirtyPages: Bool = true, offersPackedRing: Bool = false) {
        self.device = device
        self.offersPackedRing = offersPackedRing
        self.withheldProtocolFeatures = withheldProtocolFeatures
        self.marksDirtyPages = marksDirtyPages
    }

    public var deviceFeatures: UInt64 {
        device.offeredFeatures | (offersPackedRing ? PackedVirtqueueLayout.featureMask : 0)
    }
    public var queueCount: Int { Int(device.numQueues) }
    public var typeName: String { "vhost-user-blk" }

    public func readConfig(offset: Int, size: Int) -> [UInt8]? {
        device.readConfig(offset: offset, size: size)
    }

    /// Only the writeback byte may change, and only with CONFIG_WCE negotiated.
    public func writeConfig(offset: Int, bytes: [UInt8], negotiatedFeatures: UInt64) -> Bool {
        let wce = negotiatedFeatures & VirtioBlkFeature.mask(VirtioBlkFeature.configWCE) != 0
        return device.writeConfig(offset: offset, bytes: bytes, configWCENegotiated: wce)
    }

    /// One queue class per layout, each specialised for it.
    public func makeQueue(index: Int, ring: QueueRing, kickFD: Int32, callFD: Int32) -> any VhostUserDeviceQueue {
        switch ring {
        case .split(let split, let inflight):
            VirtioBlkQueue(device: device, index: index, ring: split, kickFD: kickFD, callFD: callFD, inflight: inflight)
        case .packed(let packed, let inflight):
            VirtioBlkPackedQueue(device: device, index: index, ring: packed, kickFD: kickFD, callFD: callFD, inflight: inflight)
        }
    }
}

/// The queue classes already have the queue handle's surface (start, stop, call fd, drain).
extension VirtioBlkQueue: VhostUserDeviceQueue {}
extension VirtioBlkPackedQueue: VhostUserDeviceQueue {}
