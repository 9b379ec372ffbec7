import CSpindle
import Glibc
import IOThreads

/// Watches an rbd image's notification eventfd on one IOThread: a poll SQE on the fd; when
/// it fires, the eventfd is read first and then `rbd_poll_io_events` is called until it
/// returns 0 (one wakeup can stand for many completions, and a completion queued after the
/// read writes the fd again, so the next poll fires at once). Each completion names its
/// request (the completion's argument is the request's slot); the request's result goes to
/// its owner as a CQE with the request's own token on the owner's ring: a NOP when the
/// owner is this IOThread, an IORING_OP_MSG_RING into the owner's ring otherwise (the
/// kernel posts the CQE there and wakes that thread; nothing is shared between the two
/// threads but the kernel's CQ, and the message's own CQE is skipped unless it fails).
///
/// A node has one watcher, on an IOThread that serves one of its queues; when that thread's
/// last queue of the node goes, the daemon starts a watcher on another such thread before
/// stopping this one (librbd's poll is thread-safe, and routing does not depend on which
/// thread harvests), so nothing in flight is lost while it moves.
///
/// Made on the control thread and handed to its IOThread, which alone uses it from then on
/// (`start`, completions, `stop`): hence @unchecked Sendable.
public final class RbdCompletionWatcher: IOCompletionHandler, @unchecked Sendable {
    public let io: RbdIO
    public let thread: IOThread
    private var handlerID = IOThread.ignoredHandler
    private var armed = false
    private var running = false
    private var stopped = false
    private let batch: UnsafeMutablePointer<spindle_rbd_completion_t?>
    private let counter: UnsafeMutablePointer<UInt64>
    /// This IOThread's ring: requests submitted here complete with a NOP on it.
    private let ownRing: Int32

    private static let batchSize = 64
    private static let pollTag: UInt64 = 0
    private static let removalTag: UInt64 = 1
    /// A message to another IOThread's ring that the kernel refused (only then is there a CQE).
    private static let routeFailedTag: UInt64 = 2
    /// The poll, its removal when stopping, and room for a few refused messages.
    private static let completionsNeeded = 2 + 8

    public init(io: RbdIO, thread: IOThread) {
        self.io = io
        self.thread = thread
        // Counted from now (the control thread), not from `start`: the image must not be
        // closed while this watcher's start is still posted.
        io.watcherStarted()
        ownRing = thread.context.ring.pointee.ring_fd
        batch = .allocate(capacity: Self.batchSize)
        batch.initialize(repeating: nil, count: Self.batchSize)
        counter = .allocate(capacity: 1)
        counter.initialize(to: 0)
    }

    deinit {
        batch.deallocate()
        counter.deallocate()
    }

    /// On the IOThread: registers and arms the poll.
    public func start() throws(CompletionQueueFull) {
        thread.assertOnThread()
        guard !stopped else { return }
        try thread.reserveCompletions(Self.completionsNeeded)
        handlerID = thread.register(self)
        running = true
        arm()
        // Completions may have been queued before the poll was armed (none are expected:
        // no request runs before the first queue starts), and the fd then says so anyway.
    }

    /// On the IOThread, once no request of the node is in flight, or once another watcher
    /// of the node has been posted to its thread: cancels the poll and unregisters (the
    /// poll's last CQE, if any, is dropped as stale). Every watcher made is stopped once.
    public func stop() {
        thread.assertOnThread()
        guard !stopped else { return }
        stopped = true
        defer { io.watcherStopped() }
        guard running else { return }
        running = false
        if armed, let sqe = thread.context.sqe() {
            io_uring_prep_poll_remove(sqe, CompletionToken(handler: handlerID, tag: Self.pollTag).rawValue)
            sqe.pointee.user_data = CompletionToken(handler: handlerID, tag: Self.removalTag).rawValue
        }
        thread.unregister(handlerID)
        thread.releaseCompletions(Self.completionsNeeded)
    }

    private func arm() {
        guard let sqe = thread.context.sqe() else { return }
        io_uring_prep_poll_add(sqe, io.notificationFD, UInt32(POLLIN))
        sqe.pointee.user_data = CompletionToken(handler: handlerID, tag: Self.pollTag).rawValue
        armed = true
    }

    public func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
        if tag == Self.routeFailedTag {
            io.routeFailed(errno: -result)
            return
        }
        guard tag == Self.pollTag else { return }
        armed = false
        _ = read(io.notificationFD, counter, 8)  // non-blocking; 0 or more completions follow
        harvest()
        if running { arm() }
    }

    public func endOfBatch() {}

    @inline(__always)
    private func harvest() {
        while true {
            let count = Int(spindle_rbd_poll_io_events(io.image, batch, Int32(Self.batchSize)))
            if count <= 0 { return }
            for i in 0..<count {
                guard let completion = batch[i] else { continue }
                let request = spindle_rbd_aio_get_arg(completion)!.assumingMemoryBound(to: BlockRequest.self)
                let value = spindle_rbd_aio_get_return_value(completion)
                spindle_rbd_aio_release(completion)
                if io.finish(request, returnValue: value) { continue }
                route(request)
            }
        }
    }

    /// Back to the request's owner, as a CQE with its token on the owner's ring.
    @inline(__always)
    private func route(_ request: UnsafeMutablePointer<BlockRequest>) {
        guard let sqe = thread.context.sqe() else { return }  // only if this ring is broken
        let owner = request.pointee.driverOwnerRing
        if owner == ownRing {
            io_uring_prep_nop(sqe)
            sqe.pointee.user_data = request.pointee.token.rawValue
            return
        }
        // The target CQE's res is librbd's result too (complete reads driverResult, which
        // the kernel's CQ publication makes visible to the owner).
        io_uring_prep_msg_ring(sqe, owner, UInt32(bitPattern: request.pointee.driverResult), request.pointee.token.rawValue, 0)
        io_uring_sqe_set_flags(sqe, UInt32(1) << UInt32(IOSQE_CQE_SKIP_SUCCESS_BIT))
        sqe.pointee.user_data = CompletionToken(handler: handlerID, tag: Self.routeFailedTag).rawValue
    }
}
