import ControlThread
import IOThreads

/// Chooses the IOThread that serves each virtqueue when its ring starts (control thread).
/// The daemon implements it: a named iothread, a list or mapping, or NUMA-aware automatic
/// placement next to the ring's memory.
@ControlActor
public protocol IOThreadProvider: AnyObject {
    /// The thread for `queue` of export `exportID`, whose ring (descriptor table) is at `ring`;
    /// nil if none can be had (the reason is logged; the queue does not start).
    func ioThread(forExport exportID: String, queue: Int, ring: UnsafeRawPointer) -> IOThread?
    /// The queue stopped on `thread` (its load may be given back).
    func queueStopped(export exportID: String, queue: Int, thread: IOThread)
}
