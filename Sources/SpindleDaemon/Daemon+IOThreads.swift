import ControlThread
import Exports
import Glibc
import IOThreads
import Logging
import Placement
import VhostUser

/// Which IOThread serves each virtqueue. An export that names an iothread gets it for every
/// queue (as qsd); one that names none gets automatic placement: one pinned IOThread per
/// CPU, created when first needed, and each queue goes to the least-loaded CPU.
///
/// Every change to `placements` happens here: a queue's start (`ioThread`), its stop
/// (`queueStopped`) and its move (`queueMoved`, after x-queue-move restarted it).
extension Daemon: IOThreadProvider {
    public func ioThread(forExport exportID: String, queue: Int, ring: UnsafeRawPointer) -> IOThread? {
        let key = QueueKey(export: exportID, queue: queue)
        if let named = export(id: exportID)?.options.mappedIOThread(forQueue: queue), let thread = iothreads[named] {
            logger.info("queue placement", metadata: ["export": "\(exportID)", "queue": "\(queue)", "iothread": "\(thread.id)",
                                                      "cpu": "\(thread.cpu.map(String.init) ?? "any")", "why": "the export maps this queue to iothread \(named)"])
            record(placements.started(key, on: thread.id))
            rbdBind(exportID: exportID, queue: queue, to: thread)
            return thread
        }
        guard let (thread, cpu) = automaticThread(exportID: exportID, queue: queue, ring: ring) else { return nil }
        record(placements.started(key, on: thread.id, automaticCPU: cpu))
        rbdBind(exportID: exportID, queue: queue, to: thread)
        return thread
    }

    public func queueStopped(export exportID: String, queue: Int, thread: IOThread) {
        let key = QueueKey(export: exportID, queue: queue)
        rbdQueueStopped(export: exportID, queue: queue)
        guard let stopped = placements.stopped(key, on: thread.id) else {
            logger.debug("queue stop for a thread that no longer serves it; placement unchanged",
                         metadata: ["export": "\(exportID)", "queue": "\(queue)", "iothread": "\(thread.id)"])
            return
        }
        giveBack(stopped)
    }

    /// x-queue-move restarted the queue on `thread` (its stop on the old thread came first).
    func queueMoved(export exportID: String, queue: Int, to thread: IOThread) {
        record(placements.moved(QueueKey(export: exportID, queue: queue), to: thread.id))
    }

    static func automaticThreadID(cpu: Int) -> String { "auto-cpu\(cpu)" }

    /// A start or move replaced an entry whose stop never came: its CPU is free again.
    private func record(_ replaced: QueuePlacementTable.Placement?) {
        if let replaced { giveBack(replaced) }
    }

    /// Gives the placer back the CPU it counted a queue against, if it placed that queue.
    private func giveBack(_ placement: QueuePlacementTable.Placement) {
        if let cpu = placement.automaticCPU { _ = placer?.release(cpu: cpu) }
    }

    /// NUMA-aware: the queue goes to the least-loaded CPU on the node that holds its ring.
    private func automaticThread(exportID: String, queue: Int, ring: UnsafeRawPointer) -> (IOThread, cpu: Int)? {
        guard var placer else {
            logger.error("export \(exportID) queue \(queue): no CPU topology to place it with; the queue does not start")
            return nil
        }
        let decision = placer.assign(ringNode: nodeOfAddress(ring))
        self.placer = placer
        let id = Self.automaticThreadID(cpu: decision.cpu)
        let thread: IOThread
        if let existing = iothreads[id] {
            thread = existing
        } else {
            do {
                thread = try startAutomaticThread(id: id, cpu: decision.cpu)
            } catch {
                _ = self.placer?.release(cpu: decision.cpu)
                logger.error("export \(exportID) queue \(queue): cannot create an IOThread for CPU \(decision.cpu): \(error); the queue does not start")
                return nil
            }
        }
        logger.info("queue placement", metadata: ["export": "\(exportID)", "queue": "\(queue)", "iothread": "\(id)",
                                                  "cpu": "\(decision.cpu)", "node": "\(decision.node)", "why": "\(decision.reason)"])
        return (thread, decision.cpu)
    }
}
