/// The split ring as a `VirtqueueRing`. Everything but the chain walk and the inflight
/// bookkeeping inlines into the server's specialisation.
extension SplitVirtqueue: VirtqueueRing {
    public typealias InflightRegion = InflightTracker

    public var vringBase: UInt32 { UInt32(lastAvailableIndex) }

    @inline(__always)
    public mutating func popAvailable(trackingIn region: InflightTracker) throws(VirtqueueError) -> UInt16? {
        try region.nextHead(from: &self)
    }

    /// `walkChain` on a ring held in place: a non-mutating call on a ring behind a pointer
    /// copies the whole struct (and retains its GuestMemory) for every request.
    @inlinable @inline(__always)
    public mutating func readChain(head: UInt16, into chain: DescriptorChain) throws(VirtqueueError) {
        try walkChain(head: head, into: chain)
    }

    /// The server pops the head, then walks the chain from it (two steps cost nothing extra).
    @inlinable
    public static var walksWhileTaking: Bool { false }

    /// `popAvailable` + `walkChain`.
    @inlinable @inline(__always)
    public mutating func takeAvailable(into chain: DescriptorChain) throws(VirtqueueError) -> UInt16? {
        guard let head = try popAvailable() else { return nil }
        try walkChain(head: head, into: chain)
        return head
    }

    /// 0 when a request is available (the split server never takes this way).
    @inlinable @inline(__always)
    public mutating func availableHeadFlags() throws(VirtqueueError) -> UInt16? {
        try availableCount() > 0 ? 0 : nil
    }

    @inlinable @inline(__always)
    public mutating func takeAvailable(into chain: DescriptorChain, headFlags: UInt16) throws(VirtqueueError) -> UInt16? {
        try takeAvailable(into: chain)
    }

    @inline(__always)
    public mutating func takeAvailable(into chain: DescriptorChain,
                                       trackingIn region: InflightTracker) throws(VirtqueueError) -> UInt16? {
        guard let head = try region.nextHead(from: &self) else { return nil }
        try walkChain(head: head, into: chain)
        return head
    }

    @inline(__always)
    public mutating func publishUsed(trackingIn region: InflightTracker) {
        region.publishUsed(&self)
    }
}
