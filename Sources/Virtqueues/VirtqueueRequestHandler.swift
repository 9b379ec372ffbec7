import IOThreads
import VhostUser

/// A device's side of a virtqueue server: it turns walked descriptor chains into device
/// requests and tells the server when each finished. The server (`VirtqueueServer`) owns
/// the ring, the kicks, the request slots and the used ring; the handler owns what a request
/// means (virtio-blk: header, data, status byte) and its per-slot state.
///
/// Called on the queue's IOThread only. Nothing here may allocate, lock or use existentials:
/// the server is specialised for its handler in the handler's module, so these calls are
/// direct (and mostly inlined).
public protocol VirtqueueRequestHandler: AnyObject, Sendable {
    /// Why a chain can never be completed (e.g. no byte to write a status to): the queue is
    /// then marked broken. Keep it a plain value: it is returned on the hot path.
    associatedtype Unanswerable: Error & CustomStringConvertible

    /// Host spans the longest chain may have (longer ones break the queue).
    var spansPerRequest: Int { get }
    /// Host spans each slot holds itself (the common short chain); a longer chain borrows
    /// room for `spansPerRequest` from its IOThread while in flight. At most `spansPerRequest`.
    var inlineSpansPerRequest: Int { get }

    /// On the IOThread, when the queue starts: preallocate per-slot state for `slotCount`
    /// slots (first touched here, so it lands on this thread's NUMA node). I/O the handler
    /// submits for slot `s` completes with `CompletionToken(handler: handlerID, tag: s)`, or
    /// with another tag below `VirtqueueServerTags.handlerLimit`. At most one CQE per slot
    /// may be outstanding at a time: that is what the server reserves on the thread's ring.
    func prepare(slotCount: Int, handlerID: HandlerID)

    // MARK: admission (the device's backend in-flight accounting)

    /// The queue's first request of a busy period: count the queue in as a user of the
    /// backend. False: the backend is quiesced; requests stay in the ring until
    /// `resumeAfterDrain`.
    func beginBusyPeriod() -> Bool
    /// Read before each further request of a busy period: true stops taking requests.
    var isQuiescing: Bool { get }
    /// The busy period ended (no request in flight): count the queue out.
    func endBusyPeriod()

    // MARK: requests

    /// Makes a request of the chain walked into `chain` (valid only during this call) in
    /// `slot`, and starts it.
    func start(slot: Int, chain: DescriptorChain, on context: IOContext) -> VirtqueueRequestStart<Unanswerable>
    /// A CQE with a handler tag. Returns the finished request, or nil while it goes on
    /// (another stage, a held completion).
    func complete(tag: UInt64, result: Int32, on context: IOContext) -> VirtqueueFinishedRequest?
    /// The request in `slot` is on the used ring; its slot is free from now on.
    func release(slot: Int)
    /// The queue stopped with no request in flight: free the per-slot state `prepare` made.
    func discardSlots()
    /// Bytes of per-slot state `prepare` allocates for each slot (for the queue's memory figure).
    var memoryBytesPerSlot: Int { get }
    /// The queue's request bookkeeping grew (start) or shrank (stop) by `delta` bytes, its
    /// slots and the handler's per-slot state together (e.g. to sum them per device). Any thread.
    func queueMemoryChanged(by delta: Int)
}

extension VirtqueueRequestHandler {
    /// A handler that says nothing holds room for its longest chain in every slot.
    public var inlineSpansPerRequest: Int { spansPerRequest }
    public func discardSlots() {}
    public var memoryBytesPerSlot: Int { 0 }
    public func queueMemoryChanged(by delta: Int) {}
}

/// A ring whose `readChain` can read the same chain again with the same result (no side
/// effects): a chain too long for its slot's own room is then read again into borrowed room.
/// A ring that walks while taking (`walksWhileTaking`) must instead leave itself unchanged
/// when `takeAvailable` throws `.tooManySpans`: the buffer is then taken again into borrowed
/// room. A ring without it gets `spansPerRequest` in every slot.
public protocol VirtqueueRingRereadable: VirtqueueRing {}

extension SplitVirtqueue: VirtqueueRingRereadable {}

/// What starting a request gave.
public enum VirtqueueRequestStart<Unanswerable: Error> {
    /// Submitted: a completion will come through `complete(tag:result:on:)`.
    case started
    /// Answered at once (a rejected request, GET_ID, a synchronous completion); the device
    /// wrote `usedLength` bytes into the chain's writable buffers.
    case finished(usedLength: UInt32)
    /// The request cannot be answered at all: the queue is marked broken.
    case unanswerable(Unanswerable)
}

/// A request that finished: its slot and the bytes the device wrote into its chain.
public struct VirtqueueFinishedRequest {
    public var slot: Int
    public var usedLength: UInt32
    @inlinable
    public init(slot: Int, usedLength: UInt32) {
        self.slot = slot
        self.usedLength = usedLength
    }
}

/// The server's part of a CQE tag (the low 32 bits of a completion token): tags at or
/// above `handlerLimit` are the server's own (kick polls), the rest go to the handler.
public enum VirtqueueServerTags {
    public static let handlerLimit: UInt64 = 1 << 30
    /// Kick-poll completions (the low bits: the poll generation).
    @usableFromInline static let kick: UInt64 = 1 << 31
    /// The completion of a kick-poll removal.
    @usableFromInline static let kickRemoval: UInt64 = 1 << 30
}
