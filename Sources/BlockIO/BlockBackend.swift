import BlockCommon
import ControlThread
import CSpindle
import Glibc
import IOThreads
import Synchronization

/// What a device uses to reach its image: a name, permissions, an in-flight counter, a
/// quiesce state and a root node's data path. Separate from the graph of nodes: a node never
/// learns which BlockBackend uses it.
///
/// Two faces. The I/O API (below, `public`) may be called from any IOThread: begin/end a
/// request, submit, complete. The global-state side (attach, detach, quiesce, resume) is
/// `package` and isolated to the control thread; the public GS API lives in BlockGraph.
public final class BlockBackend: @unchecked Sendable {
    public let name: String

    // Written only on the control thread while every request is drained; read by IOThreads
    // only between beginRequest and endRequest, so never while it changes.
    nonisolated(unsafe) private var rootIO: (any BlockDriverIO)?
    /// The same data path as IOThreads call it: unretained, owned by `rootBox` (set and
    /// cleared with `rootIO`, under the same rule). Loading the existential from `rootIO`
    /// retains and releases it around every call: two pairs per request.
    nonisolated(unsafe) private var rootRef: Unmanaged<RootIOBox>?
    nonisolated(unsafe) private var rootBox: RootIOBox?
    nonisolated(unsafe) private var perms: BlockPermissions

    private let inFlight = Atomic<Int>(0)
    private let quiesceDepth = Atomic<Int>(0)
    /// Set by the GS side while it waits for in-flight to reach zero. Held in a struct: a
    /// bare closure in the generic mutex is reabstracted on every `inout` access, and a read
    /// that writes it back wraps it in two more thunks each time (refused admissions while
    /// quiesced read it once each: an inactive node's queue polled for 30 s nested it so
    /// deep that calling or releasing it overflowed the IOThread's stack).
    private struct DrainWaiter { var call: (@Sendable () -> Void)? }
    private let drainWaiter = PosixMutex(DrainWaiter(call: nil))

    @ControlActor
    package init(name: String, permissions: BlockPermissions) {
        self.name = name
        self.perms = permissions
    }

    // MARK: I/O API (any IOThread)

    /// Counts a request as in flight before the device takes it off its queue. Returns false
    /// (and counts nothing) while the BlockBackend is quiesced: the device must then leave the
    /// request where it is (in the ring) until it is resumed.
    @inline(__always)
    public func beginRequest() -> Bool {
        inFlight.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if quiesceDepth.load(ordering: .sequentiallyConsistent) == 0 { return true }
        endRequest()
        return false
    }

    /// Whether a drain has begun: a device that already holds a request in flight (counted
    /// by `beginRequest`) checks this before taking another under the same count.
    @inline(__always)
    public var isQuiescing: Bool { quiesceDepth.load(ordering: .sequentiallyConsistent) > 0 }

    /// Requests begun and not yet ended, for monitoring (a relaxed read: a snapshot, not a
    /// synchronisation point).
    public var inFlightRequests: Int { inFlight.load(ordering: .relaxed) }

    /// Ends what `beginRequest` began, after the request's final completion.
    @inline(__always)
    public func endRequest() {
        let remaining = inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent).newValue
        if remaining == 0 && quiesceDepth.load(ordering: .sequentiallyConsistent) > 0 {
            drainWaiter.withLock { $0.call }?()
        }
    }

    /// The attached node's size, or 0 when nothing is attached (revoked).
    @inline(__always)
    public var length: UInt64 {
        guard let root = rootRef else { return 0 }
        return root._withUnsafeGuaranteedRef { $0.io.length }
    }

    /// Whether the BlockBackend may write (permission granted and the node writable).
    public var isWritable: Bool {
        guard perms.contains(.write), let root = rootRef else { return false }
        return root._withUnsafeGuaranteedRef { $0.io.writable }
    }

    /// Starts a request between beginRequest and endRequest. Checks permissions and bounds,
    /// then hands it to the root node's driver.
    @inline(__always)
    public func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        guard let rootRef else { return .done(-EIO) }  // revoked: fail cleanly
        return rootRef._withUnsafeGuaranteedRef { box in
            let root = box.io
            let op = request.pointee.operation
            if op != .read && op != .flush && !(perms.contains(.write) && root.writable) { return .done(-EROFS) }
            if op != .flush {
                let (end, overflow) = request.pointee.offset.addingReportingOverflow(request.pointee.length)
                if overflow || end > root.length { return .done(-EIO) }
                if (op == .read || op == .write) && request.pointee.length > UInt64(Int32.max) { return .done(-EINVAL) }
            }
            return root.submit(request, on: context)
        }
    }

    /// Passes a CQE to the driver; nil means the driver queued more work for this request.
    @inline(__always)
    public func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? {
        guard let rootRef else { return result }
        return rootRef._withUnsafeGuaranteedRef { $0.io.complete(request, result: result, on: context) }
    }

    // MARK: global-state side (control thread; the public GS API is in BlockGraph)

    @ControlActor package var root: (any BlockDriverIO)? { rootIO }
    @ControlActor package var permissions: BlockPermissions { perms }

    /// Attaches or detaches (nil) the root node's data path. Only while drained.
    @ControlActor
    package func setRoot(_ io: (any BlockDriverIO)?, permissions: BlockPermissions) {
        ControlActor.preconditionOnControlThread("BlockBackend.setRoot")
        precondition(quiesceDepth.load(ordering: .sequentiallyConsistent) > 0 && inFlight.load(ordering: .sequentiallyConsistent) == 0,
                     "graph change on BlockBackend '\(name)' while it is not drained")
        rootIO = io
        rootBox = io.map(RootIOBox.init)
        rootRef = rootBox.map { .passUnretained($0) }
        perms = permissions
    }

    /// Stops new requests (nesting) and returns whether in-flight is already zero. The waiter
    /// is called, from whichever IOThread ends the last request, when it reaches zero.
    @ControlActor
    package func beginQuiesce(onDrained waiter: @escaping @Sendable () -> Void) -> Bool {
        drainWaiter.withLock { $0.call = waiter }
        quiesceDepth.wrappingAdd(1, ordering: .sequentiallyConsistent)
        return inFlight.load(ordering: .sequentiallyConsistent) == 0
    }

    @ControlActor package var isDrained: Bool {
        quiesceDepth.load(ordering: .sequentiallyConsistent) > 0 && inFlight.load(ordering: .sequentiallyConsistent) == 0
    }

    /// Undoes one beginQuiesce; returns true when the BlockBackend is running again.
    @ControlActor
    package func endQuiesce() -> Bool {
        let depth = quiesceDepth.wrappingSubtract(1, ordering: .sequentiallyConsistent).newValue
        precondition(depth >= 0, "unbalanced drain end on BlockBackend '\(name)'")
        if depth == 0 { drainWaiter.withLock { $0.call = nil } }
        return depth == 0
    }
}

/// The root's data path in a box of its own, so that IOThreads can reach it through an
/// unretained reference (`Unmanaged` takes a class, not an existential) and borrow its
/// `let` without reference counting.
final class RootIOBox {
    let io: any BlockDriverIO
    init(_ io: any BlockDriverIO) { self.io = io }
}
