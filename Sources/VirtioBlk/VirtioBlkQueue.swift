import Logging
import IOThreads
import VhostUser
import Virtqueues

/// One virtqueue of a virtio-blk device, served on one IOThread: the generic virtqueue
/// server (kicks, polling, admission, slots, inflight marks, used ring, signalling) on a
/// split ring, with virtio-blk's request handling as its client.
///
/// Declaring the conformances here is what specialises the server: the IOThread calls this
/// class's witnesses, compiled in this module for `SplitVirtqueue` and
/// `VirtioBlkRequestHandler`, with the server's `@inlinable` code inlined into them.
public final class VirtioBlkQueue: VirtqueueServer<SplitVirtqueue, VirtioBlkRequestHandler>,
                                   IOCompletionHandler, IOPoller, @unchecked Sendable {
    public init(device: VirtioBlkDevice, index: Int, ring: SplitVirtqueue, kickFD: Int32, callFD: Int32,
                inflight: InflightTracker? = nil) {
        var logger = Logger(label: "spindle.virtio-blk")
        logger[metadataKey: "export"] = "\(device.exportID)"
        logger[metadataKey: "queue"] = "\(index)"
        super.init(index: index, ring: ring, handler: VirtioBlkRequestHandler(device: device, logger: logger, queue: index),
                   kickFD: kickFD, callFD: callFD, slotCount: VirtioBlkDevice.maxSlotsPerQueue,
                   inflight: inflight, logger: logger)
    }

    public var device: VirtioBlkDevice { handler.device }
}
