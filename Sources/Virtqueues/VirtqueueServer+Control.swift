import ControlThread
import IOThreads

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
}
