import VhostUser

/// A packed buffer too long for a slot's own spans fails its one-walk take with
/// `.tooManySpans` and leaves the ring as it was (`PackedVirtqueue.takeAvailable(into:)`):
/// the server takes it again into a borrowed span block, so packed slots are sized like
/// split ones (short chains inline) instead of for the longest chain.
extension PackedVirtqueue: VirtqueueRingRereadable {}
