import Logging
import IOThreads
import VhostUser
import Virtqueues

/// One virtqueue of a virtio-blk device on a packed ring: `VirtioBlkQueue`'s twin for the
/// other layout. Its own class so that the server is specialised for `PackedVirtqueue` here
/// (see `VirtioBlkQueue`), with the packed inflight region when there is one.
public final class VirtioBlkPackedQueue: VirtqueueServer<PackedVirtqueue, VirtioBlkRequestHandler>,
                                         IOCompletionHandler, IOPoller, @unchecked Sendable {
    public init(device: VirtioBlkDevice, index: Int, ring: PackedVirtqueue, kickFD: Int32, callFD: Int32,
                inflight: PackedInflightTracker? = nil) {
        var logger = Logger(label: "spindle.virtio-blk")
        logger[metadataKey: "export"] = "\(device.exportID)"
        logger[metadataKey: "queue"] = "\(index)"
        logger[metadataKey: "ring"] = "packed"
        super.init(index: index, ring: ring, handler: VirtioBlkRequestHandler(device: device, logger: logger, queue: index),
                   kickFD: kickFD, callFD: callFD, slotCount: VirtioBlkDevice.maxSlotsPerQueue,
                   inflight: inflight, logger: logger)
    }

    public var device: VirtioBlkDevice { handler.device }
}
