import CSpindle
import Glibc
import IOThreads

/// Watches an rbd image's notification eventfd on one IOThread: a poll SQE on the fd; when
/// it fires, the eventfd is read first and then `rbd_poll_io_events` is called until it
/// returns 0 (one wakeup can stand for many completions, and a completion queued after the
/// read writes the fd again, so the next poll fires at once). Each completion names its
/// request (the completion's argument is the request's slot); the request's result goes to
/// its owner through a NOP CQE with the request's own token.
///
/// Made on the control thread and handed to its IOThread, which alone uses it from then on
/// (`start`, completions, `stop`): hence @unchecked Sendable.
public final class RbdCompletionWatcher: IOCompletionHandler, @unchecked Sendable {
    public let io: RbdIO
    public let thread: IOThread
    private var handlerID = IOThread.ignoredHandler
    private var armed = false
    private var running = false
    private let batch: UnsafeMutablePointer<spindle_rbd_completion_t?>
    private let counter: UnsafeMutablePointer<UInt64>

    private static let batchSize = 64
    private static let pollTag: UInt64 = 0
    private static let removalTag: UInt64 = 1
    /// The poll, and its removal when stopping.
    private static let completionsNeeded = 2

    public init(io: RbdIO, thread: IOThread) {
        self.io = io
        self.thread = thread
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
        try thread.reserveCompletions(Self.completionsNeeded)
        handlerID = thread.register(self)
        running = true
        io.watcherStarted()
        arm()
        // Completions may have been queued before the poll was armed (none are expected:
        // no request runs before the first queue starts), and the fd then says so anyway.
    }

    /// On the IOThread, once no request of the node is in flight: cancels the poll and
    /// unregisters (the poll's last CQE, if any, is dropped as stale).
    public func stop() {
        thread.assertOnThread()
        guard running else { return }
        running = false
        if armed, let sqe = thread.context.sqe() {
            io_uring_prep_poll_remove(sqe, CompletionToken(handler: handlerID, tag: Self.pollTag).rawValue)
            sqe.pointee.user_data = CompletionToken(handler: handlerID, tag: Self.removalTag).rawValue
        }
        thread.unregister(handlerID)
        thread.releaseCompletions(Self.completionsNeeded)
        io.watcherStopped()
    }

    private func arm() {
        guard let sqe = thread.context.sqe() else { return }
        io_uring_prep_poll_add(sqe, io.notificationFD, UInt32(POLLIN))
        sqe.pointee.user_data = CompletionToken(handler: handlerID, tag: Self.pollTag).rawValue
        armed = true
    }

    public func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
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
                // Back to the request's owner on this thread, as a CQE with its token.
                guard let sqe = thread.context.sqe() else { continue }  // only if the ring is broken
                io_uring_prep_nop(sqe)
                sqe.pointee.user_data = request.pointee.token.rawValue
            }
        }
    }
}
