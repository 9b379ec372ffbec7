import ControlThread
import IOThreads
import VhostUser

/// Control-thread helpers: each hops to the queue's IOThread and waits for the answer.
extension VirtqueueServer {
    /// Stops the queue on its IOThread and returns its next avail index.
    @ControlActor
    public final func stop(on thread: IOThread) async -> UInt16 {
        await withCheckedContinuation { continuation in
            thread.post { _ in self.stop { continuation.resume(returning: $0) } }
        }
    }

    /// Switches the call eventfd on the IOThread; after this returns, the old one is unused.
    @ControlActor
    public final func replaceCallFD(_ fd: Int32, on thread: IOThread) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            thread.post { _ in
                self.setCallFD(fd)
                continuation.resume()
            }
        }
    }

    /// The dirty log a queue that has not started yet will mark (on the control thread,
    /// before the start is posted to the IOThread).
    public final func setInitialDirtyLog(_ log: VirtqueueDirtyLog) {
        precondition(state == .idle, "virtqueue \(index): the initial dirty log is set before start")
        dirtyLog = log
    }

    /// Switches the dirty log on the IOThread; after this returns, the queue never touches
    /// the previous log again (the caller may unmap it). Requests completing from then on
    /// mark the new one.
    @ControlActor
    public final func replaceDirtyLog(_ log: VirtqueueDirtyLog, on thread: IOThread) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            thread.post { _ in
                self.installDirtyLog(log)
                continuation.resume()
            }
        }
    }

    final func installDirtyLog(_ log: VirtqueueDirtyLog) {
        dirtyLog = log
        // What was published before is the frontend's business (copied in full when
        // logging began); from now on the used ring's changes are marked.
        ring.beginUsedRingLog()
    }
}
