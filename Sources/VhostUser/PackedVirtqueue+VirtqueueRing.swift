/// The packed ring as a `VirtqueueRing`. Inflight tracking (INFLIGHT_SHMFD) is not there yet
/// for this layout: its region type cannot be instantiated, so a server for a packed ring
/// always runs without one.
extension PackedVirtqueue: VirtqueueRing {
    public typealias InflightRegion = NoInflightRegion

    public var vringBase: UInt32 { base.encoded }

    /// `walkBuffer` on a ring held in place (a non-mutating call on a ring behind a pointer
    /// would copy the struct and retain its GuestMemory per request).
    @inlinable @inline(__always)
    public mutating func readChain(head id: UInt16, into chain: DescriptorChain) throws(VirtqueueError) {
        try walkBuffer(id: id, into: chain)
    }

    @inline(__always)
    public mutating func popAvailable(trackingIn region: NoInflightRegion) throws(VirtqueueError) -> UInt16? {
        try popAvailable()
    }

    @inline(__always)
    public mutating func publishUsed(trackingIn region: NoInflightRegion) {
        publishUsed()
    }
}

/// The inflight region of a ring layout without inflight tracking: no value of it exists.
public final class NoInflightRegion {
    private init() {}
}
