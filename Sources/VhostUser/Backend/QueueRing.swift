/// The ring a queue starts on, in the layout the driver negotiated (VIRTIO_F_RING_PACKED or
/// not). Chosen once per queue start: the device builds a queue class specialised for each
/// layout, so the layout costs nothing per request (no existential, no switch).
public enum QueueRing: Sendable {
    /// A split ring, with its inflight tracker when the frontend shared an inflight region.
    case split(SplitVirtqueue, inflight: InflightTracker?)
    /// A packed ring, with its inflight tracker when the frontend shared an inflight region.
    case packed(PackedVirtqueue, inflight: PackedInflightTracker?)

    /// Where the ring's descriptors are mapped here (to place the queue near its memory).
    public var descriptorsAddress: UnsafeRawPointer {
        switch self {
        case .split(let ring, _): ring.descriptorTableAddress
        case .packed(let ring, _): ring.descriptorRingAddress
        }
    }
}
