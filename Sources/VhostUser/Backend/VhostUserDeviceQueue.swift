import ControlThread
import IOThreads

/// One running virtqueue of a device, as the session drives it: started on an IOThread,
/// stopped (draining its in-flight requests) before the frontend reads its base, moved, or
/// given a new call eventfd. The queue itself owns everything per request.
public protocol VhostUserDeviceQueue: AnyObject, Sendable {
    /// Called on the IOThread, once, when the queue stopped by itself: the guest corrupted
    /// the ring, or the queue could not start there. `reason` is for the operator. The
    /// session then resets the device (error eventfd, connection closed). Set on the control
    /// thread before `start`.
    var onBroken: (@Sendable (_ queueIndex: Int, _ reason: String) -> Void)? { get set }
    /// Starts serving the ring; runs on `thread` (the session posts it there).
    func start(on thread: IOThread)
    /// Stops the queue on `thread` after its in-flight requests complete; returns the next
    /// avail index (the ring's base for GET_VRING_BASE).
    @ControlActor func stop(on thread: IOThread) async -> UInt16
    /// Switches the call eventfd on `thread`; after this returns the old one is unused.
    @ControlActor func replaceCallFD(_ fd: Int32, on thread: IOThread) async
    /// A drain of the device's storage ended: look at the ring again. Runs on the IOThread.
    func resumeAfterDrain()
    /// The dirty log the queue will mark once started (live migration); called on the
    /// control thread before `start`.
    func setInitialDirtyLog(_ log: VirtqueueDirtyLog)
    /// Switches the dirty log on `thread`; after this returns the queue never touches the
    /// previous one again.
    @ControlActor func replaceDirtyLog(_ log: VirtqueueDirtyLog, on thread: IOThread) async
}
