/// A virtqueue ring layout seen from the device side: what a virtqueue server needs to take
/// requests off the ring and give them back. `SplitVirtqueue` is one layout; a packed ring
/// would be a second one (one file conforming to this, not a copy of the server).
///
/// Every method runs on the queue's one thread; `Sendable` only because a ring is built on
/// the control thread and then handed to that thread. A `VirtqueueError` means the driver
/// broke the protocol: the caller stops using the queue (`markBroken()`).
///
/// Conformances must be `@inlinable` where the hot path calls them: the server is specialised
/// for each layout in its client's module, and a non-inlinable requirement costs a call.
public protocol VirtqueueRing: Sendable {
    /// The layout's inflight region tracker (vhost-user INFLIGHT_SHMFD): the region's
    /// format differs per layout, so each layout names its own.
    associatedtype InflightRegion: AnyObject

    /// Entries in the ring (SET_VRING_NUM).
    var size: UInt16 { get }
    /// Where the device will take the next request.
    var lastAvailableIndex: UInt16 { get }
    /// GET_VRING_BASE's answer (split: the avail index; packed: both indices and wrap
    /// counters, `PackedVringBase`).
    var vringBase: UInt32 { get }
    var isBroken: Bool { get }

    /// Requests the driver made available and the device has not taken yet.
    mutating func availableCount() throws(VirtqueueError) -> UInt16
    /// The next available request's head, or nil if there is none (or the ring is broken).
    mutating func popAvailable() throws(VirtqueueError) -> UInt16?
    /// `popAvailable` that also marks the head taken in the inflight region (requests a
    /// previous process left in flight come first).
    mutating func popAvailable(trackingIn region: InflightRegion) throws(VirtqueueError) -> UInt16?
    /// Walks the chain at `head` into `chain` (host spans). `mutating` only so that a ring
    /// held behind a pointer is used in place, never copied.
    mutating func readChain(head: UInt16, into chain: DescriptorChain) throws(VirtqueueError)
    /// Whether the server takes requests with `takeAvailable(into:)` (one walk: packed, whose
    /// buffer id is in the chain's last descriptor) rather than `popAvailable` + `readChain`
    /// (split, whose head comes first). A constant: the specialised server keeps one way.
    static var walksWhileTaking: Bool { get }
    /// Takes the next available request and walks it into `chain`; nil if there is none.
    mutating func takeAvailable(into chain: DescriptorChain) throws(VirtqueueError) -> UInt16?
    /// What `takeAvailable(into:headFlags:)` needs of the next available request, read once
    /// (packed: the head descriptor's flags; split: 0), or nil if there is none: lets the
    /// server see an empty ring inline, before lending a chain to the walk.
    mutating func availableHeadFlags() throws(VirtqueueError) -> UInt16?
    /// `takeAvailable(into:)` for the request `availableHeadFlags()` just found.
    mutating func takeAvailable(into chain: DescriptorChain, headFlags: UInt16) throws(VirtqueueError) -> UInt16?
    /// `takeAvailable(into:)` with the inflight region kept up to date (as `popAvailable(trackingIn:)`).
    mutating func takeAvailable(into chain: DescriptorChain, trackingIn region: InflightRegion) throws(VirtqueueError) -> UInt16?

    /// Records a finished request; invisible to the driver until `publishUsed`.
    mutating func addUsed(head: UInt16, writtenLength: UInt32)
    /// Makes every request added so far visible to the driver.
    mutating func publishUsed()
    /// `publishUsed` with the inflight region updated around it in the order recovery needs.
    mutating func publishUsed(trackingIn region: InflightRegion)
    /// Whether the driver wants an interrupt for what was published since the last decision.
    mutating func shouldNotifyGuest() -> Bool

    /// Asks the driver not to kick (the device looks at the ring by itself).
    mutating func disableGuestKicks()
    /// Asks the driver to kick again; true if work arrived while kicks were off.
    mutating func enableGuestKicks() -> Bool
    /// Stops handing out work after a driver error.
    mutating func markBroken()

    // MARK: dirty logging (live migration: what the device wrote into guest memory)

    /// Marks in `log` the guest pages of the chain's device-writable buffers, all of them (a
    /// device may write more than the used length it reports). Returns pages not marked.
    mutating func logWritableBuffers(of chain: DescriptorChain, in log: DirtyLogBitmap) -> UInt64
    /// Marks the ring bytes `publishUsed` made visible since the last call (or since
    /// `beginUsedRingLog`), the ring's device-written area being logged at guest-physical
    /// `ringLogAddress` (SET_VRING_ADDR's log_guest_addr). Call after publishing.
    mutating func logPublishedUsed(at ringLogAddress: UInt64, in log: DirtyLogBitmap) -> UInt64
    /// Forgets what was published before now (a log was just installed).
    mutating func beginUsedRingLog()
    /// Marks every ring byte the device may have written (also the ones written outside a
    /// publish, like kick suppression fields): when the queue stops, before its base is reported.
    func logDeviceArea(at ringLogAddress: UInt64, in log: DirtyLogBitmap) -> UInt64
}
