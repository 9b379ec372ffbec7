import BlockIO
import ControlThread
import IOThreads
import Logging

/// Where an rbd node's requests run. Its queues are placed like any others (the export's
/// iothread options, automatic placement, x-queue-move), so they may be on several
/// IOThreads; the image has one handle and one completion eventfd (librbd's rule), which
/// one `RbdCompletionWatcher` harvests and routes back to each request's own IOThread
/// through the kernel (RbdCompletionWatcher.swift says how).
///
/// The watcher runs on an IOThread that serves one of the node's queues: it starts with the
/// node's first queue, moves when its thread's last queue of the node stops or moves away
/// (the new watcher is posted before the old one's stop; either may harvest meanwhile), and
/// stops with the node's last queue (so a closing node never has a watcher).
struct RbdBinding {
    let io: RbdIO
    var watcher: RbdCompletionWatcher
    /// Each running queue of the node and its IOThread.
    var queues: [QueueKey: IOThread]
    /// Queues being moved by x-queue-move: their stop hands them to the new thread.
    var moving: [QueueKey: IOThread] = [:]
}

extension Daemon {
    /// After placement of an rbd-backed queue: recorded; the node's first queue starts its
    /// watcher there (posted: it runs before the queue's own start on that thread).
    func rbdBind(exportID: String, queue: Int, to thread: IOThread) {
        guard let io = rbdIO(forExport: exportID) else { return }
        let key = QueueKey(export: exportID, queue: queue)
        if var binding = rbdBindings[ObjectIdentifier(io)] {
            binding.queues[key] = thread
            rbdBindings[ObjectIdentifier(io)] = binding
            return
        }
        let watcher = startRbdWatcher(io, on: thread)
        rbdBindings[ObjectIdentifier(io)] = RbdBinding(io: io, watcher: watcher, queues: [key: thread])
        logger.info("rbd node '\(io.nodeName)' served by iothread \(thread.id)")
    }

    /// A queue stopped: it leaves its node's binding (or, mid-move, goes over to its new
    /// thread); the last one stops the watcher, and a watcher left on a thread without the
    /// node's queues moves to one that has some.
    func rbdQueueStopped(export exportID: String, queue: Int) {
        let key = QueueKey(export: exportID, queue: queue)
        guard let id = rbdBindings.first(where: { $0.value.queues[key] != nil })?.key, var binding = rbdBindings[id] else { return }
        binding.queues[key] = binding.moving.removeValue(forKey: key)
        guard !binding.queues.isEmpty else {
            rbdBindings[id] = nil
            let watcher = binding.watcher
            watcher.thread.post { _ in watcher.stop() }
            return
        }
        let old = binding.watcher
        if !binding.queues.values.contains(where: { $0 === old.thread }),
           let next = binding.queues.sorted(by: { ($0.key.export, $0.key.queue) < ($1.key.export, $1.key.queue) }).first?.value {
            binding.watcher = startRbdWatcher(binding.io, on: next)
            old.thread.post { _ in old.stop() }
            logger.info("rbd node '\(binding.io.nodeName)': its completions are now harvested on iothread \(next.id) (no queue of the node left on \(old.thread.id))")
        }
        rbdBindings[id] = binding
    }

    /// x-queue-move of an rbd-backed queue begins: its stop on the old thread hands it over.
    func rbdQueueMoveStarting(exportID: String, queue: Int, to thread: IOThread) {
        let key = QueueKey(export: exportID, queue: queue)
        guard let id = rbdBindings.first(where: { $0.value.queues[key] != nil })?.key else { return }
        rbdBindings[id]?.moving[key] = thread
    }

    /// x-queue-move ended. If it failed after the queue stopped, the queue is not running
    /// anywhere: it leaves the binding as a stopped queue does.
    func rbdQueueMoveEnded(exportID: String, queue: Int, moved: Bool) {
        let key = QueueKey(export: exportID, queue: queue)
        guard let id = rbdBindings.first(where: { $0.value.queues[key] != nil })?.key else { return }
        let stillPending = rbdBindings[id]?.moving.removeValue(forKey: key) != nil
        if !moved && !stillPending { rbdQueueStopped(export: exportID, queue: queue) }
    }

    private func startRbdWatcher(_ io: RbdIO, on thread: IOThread) -> RbdCompletionWatcher {
        let watcher = RbdCompletionWatcher(io: io, thread: thread)
        let logger = self.logger
        thread.post { _ in
            do throws(CompletionQueueFull) {
                try watcher.start()
            } catch {
                logger.error("rbd node '\(io.nodeName)': cannot watch its completions on iothread \(thread.id): \(error); its requests will not complete")
            }
        }
        return watcher
    }
}
