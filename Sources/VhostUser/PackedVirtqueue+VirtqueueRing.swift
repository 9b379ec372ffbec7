/// The packed ring as a `VirtqueueRing`, with the packed inflight region as its tracker.
extension PackedVirtqueue: VirtqueueRing {
    public typealias InflightRegion = PackedInflightTracker

    public var vringBase: UInt32 { base.encoded }

    /// The server takes buffers with `takeAvailable(into:)`: the id is at the chain's end.
    @inlinable
    public static var walksWhileTaking: Bool { true }

    /// `walkBuffer` on a ring held in place (a non-mutating call on a ring behind a pointer
    /// would copy the struct and retain its GuestMemory per request).
    @inlinable @inline(__always)
    public mutating func readChain(head id: UInt16, into chain: DescriptorChain) throws(VirtqueueError) {
        try walkBuffer(id: id, into: chain)
    }

    @inline(__always)
    public mutating func popAvailable(trackingIn region: PackedInflightTracker) throws(VirtqueueError) -> UInt16? {
        try region.nextID(from: &self)
    }

    /// `takeAvailable(into:)` (one walk) with the inflight region kept up to date.
    @inline(__always)
    public mutating func takeAvailable(into chain: DescriptorChain,
                                       trackingIn region: PackedInflightTracker) throws(VirtqueueError) -> UInt16? {
        try region.nextID(from: &self, into: chain)
    }

    @inline(__always)
    public mutating func publishUsed(trackingIn region: PackedInflightTracker) {
        region.publishUsed(&self)
    }
}
