import CSpindle
import Glibc
import IOThreads
import Synchronization

/// The `rbd` driver's data path: librbd's asynchronous calls on the request's own iovecs
/// (zero copy), with completions that carry no callback: librbd queues them and writes the
/// image's notification eventfd, which the node's `RbdCompletionWatcher` polls through
/// io_uring on one IOThread. The watcher hands each finished request back to the IOThread
/// that submitted it, as a CQE carrying the request's own token on that thread's ring (a NOP
/// on its own ring, an IORING_OP_MSG_RING into another's), so the request ends like any
/// other, through its handler; `complete` then returns what librbd said.
///
/// One image handle, one notification fd (librbd's rule), any number of IOThreads: each
/// request records the ring of the thread that submitted it (`driverOwnerRing`), so routing
/// takes no lock and no table; the kernel carries the completion across threads.
/// Per request: librbd's completion object (librbd allocates it) and one NOP or message.
///
/// While a request is in flight its IOThread does not busy-poll (`IOContext.offRingRequests`):
/// librbd's threads complete it, milliseconds later, and a spinning IOThread took the CPU
/// they needed (bench/results/2026-12-07-rbd-threads.md: fewer IOPS, more CPU per request).
public final class RbdIO: BlockDriverIO {
    /// librbd's image handle (its aio calls are thread-safe); closed by the driver after
    /// the watcher has stopped.
    nonisolated(unsafe) public let image: UnsafeMutableRawPointer
    public let notificationFD: Int32
    public let writable: Bool
    public let discardUnmaps: Bool
    /// Names the node in log lines.
    public let nodeName: String
    private let size: Atomic<UInt64>
    /// Watchers running (0, 1, or 2 while the watcher moves to another IOThread): the image
    /// may only be closed at 0.
    private let watcherCount = Atomic<Int>(0)
    private let routeFailureCount = Atomic<Int>(0)
    private let lastRouteErrno = Atomic<Int>(0)

    static let stageOperation: UInt8 = 0
    /// A FUA write's flush (librbd has no FUA: the write is made durable by a flush after it).
    static let stageFUAFlush: UInt8 = 1

    public init(image: UnsafeMutableRawPointer, notificationFD: Int32, length: UInt64, writable: Bool,
                discardUnmaps: Bool, nodeName: String) {
        self.image = image
        self.notificationFD = notificationFD
        self.writable = writable
        self.discardUnmaps = discardUnmaps
        self.nodeName = nodeName
        self.size = Atomic(length)
    }

    public var length: UInt64 { size.load(ordering: .relaxed) }

    /// After rbd_resize, on the control thread (users drained).
    package func setLength(_ newLength: UInt64) { size.store(newLength, ordering: .releasing) }

    public var watchersRunning: Int { watcherCount.load(ordering: .acquiring) }

    public func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        let operation = request.pointee.operation
        // Discard is advisory: with discard=ignore it succeeds without touching the image.
        if operation == .discard && !discardUnmaps { return .done(0) }
        var completion: spindle_rbd_completion_t? = nil
        guard spindle_rbd_aio_create_completion(UnsafeMutableRawPointer(request), &completion) == 0, let completion else {
            return .done(-ENOMEM)
        }
        request.pointee.stage = Self.stageOperation
        request.pointee.driverOwnerRing = context.ring.pointee.ring_fd
        let offset = request.pointee.offset
        let rc: Int32
        switch operation {
        case .read:
            rc = spindle_rbd_aio_readv(image, request.pointee.iov, request.pointee.iovcnt, offset, completion)
        case .write:
            rc = spindle_rbd_aio_writev(image, request.pointee.iov, request.pointee.iovcnt, offset, completion)
        case .flush:
            rc = spindle_rbd_aio_flush(image, completion)
        case .discard:
            rc = spindle_rbd_aio_discard(image, offset, request.pointee.length, completion)
        case .writeZeroes:
            rc = spindle_rbd_aio_write_zeroes(image, offset, Int(truncatingIfNeeded: request.pointee.length), completion)
        }
        guard rc >= 0 else {
            spindle_rbd_aio_release(completion)
            return .done(rc)
        }
        // Until `complete`, on this thread: the IOThread sleeps rather than busy-polls meanwhile.
        context.offRingRequestStarted()
        return .queued
    }

    /// The NOP that the watcher queued: its own result (0) says nothing; librbd's is kept.
    public func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? {
        context.offRingRequestEnded()
        return request.pointee.driverResult
    }

    /// A completion librbd gave back (on the watcher's IOThread, which need not be the
    /// request's: the request is librbd's until the watcher routes it, so only the watcher
    /// touches it here). Returns true if the request
    /// goes on (a FUA write's flush was started), false if it is finished: its result is in
    /// `driverResult` and the caller queues the NOP.
    @inline(__always)
    func finish(_ request: UnsafeMutablePointer<BlockRequest>, returnValue: Int) -> Bool {
        if returnValue < 0 {
            request.pointee.driverResult = Int32(clamping: returnValue)
            return false
        }
        if request.pointee.operation == .write && request.pointee.fua && request.pointee.stage == Self.stageOperation {
            var completion: spindle_rbd_completion_t? = nil
            if spindle_rbd_aio_create_completion(UnsafeMutableRawPointer(request), &completion) == 0, let completion {
                request.pointee.stage = Self.stageFUAFlush
                let rc = spindle_rbd_aio_flush(image, completion)
                if rc >= 0 { return true }
                spindle_rbd_aio_release(completion)
                request.pointee.driverResult = rc
            } else {
                request.pointee.driverResult = -ENOMEM
            }
            return false
        }
        switch request.pointee.operation {
        case .read, .write:
            // RBD has no short transfers inside the image (holes read as zeroes).
            request.pointee.driverResult = Int32(truncatingIfNeeded: request.pointee.length)
        case .flush, .discard, .writeZeroes:
            request.pointee.driverResult = 0
        }
        return false
    }

    /// Completions the kernel refused to carry to another IOThread's ring (never seen: only
    /// a ring torn down under its requests or no memory): those requests never complete.
    public var routeFailures: Int { routeFailureCount.load(ordering: .relaxed) }
    /// The errno of the last refused completion message.
    public var lastRouteError: Int32 { Int32(truncatingIfNeeded: lastRouteErrno.load(ordering: .relaxed)) }
    func routeFailed(errno: Int32) {
        lastRouteErrno.store(Int(errno), ordering: .relaxed)
        routeFailureCount.add(1, ordering: .relaxed)
    }

    func watcherStarted() { watcherCount.add(1, ordering: .releasing) }
    func watcherStopped() { watcherCount.subtract(1, ordering: .releasing) }
}
