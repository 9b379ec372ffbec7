import ControlThread
import Exports
import Glibc
import IOThreads
import Logging
import Placement

/// Which IOThread serves each virtqueue. An export that names an iothread gets it for every
/// queue (as qsd); one that names none gets automatic placement: one pinned IOThread per
/// CPU, created when first needed, and each queue goes to the least-loaded CPU.
extension Daemon: IOThreadProvider {
    public func ioThread(forExport exportID: String, queue: Int, ring: UnsafeRawPointer) -> IOThread? {
        let thread = chooseThread(exportID: exportID, queue: queue, ring: ring)
        if let thread { queuesServed[thread.id, default: []].insert("\(exportID)/\(queue)") }
        return thread
    }

    private func chooseThread(exportID: String, queue: Int, ring: UnsafeRawPointer) -> IOThread? {
        if let named = export(id: exportID)?.options.mappedIOThread(forQueue: queue), let thread = iothreads[named] {
            logger.info("queue placement", metadata: ["export": "\(exportID)", "queue": "\(queue)", "iothread": "\(thread.id)",
                                                      "cpu": "\(thread.cpu.map(String.init) ?? "any")", "why": "the export maps this queue to iothread \(named)"])
            return thread
        }
        return automaticThread(exportID: exportID, queue: queue, ring: ring)
    }

    public func queueStopped(export exportID: String, queue: Int, thread: IOThread) {
        queuesServed[thread.id]?.remove("\(exportID)/\(queue)")
        if let cpu = thread.cpu, thread.id == Self.automaticThreadID(cpu: cpu) {
            _ = placer?.release(cpu: cpu)
        }
    }

    static func automaticThreadID(cpu: Int) -> String { "auto-cpu\(cpu)" }

    /// NUMA-aware: the queue goes to the least-loaded CPU on the node that holds its ring.
    private func automaticThread(exportID: String, queue: Int, ring: UnsafeRawPointer) -> IOThread? {
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
        return thread
    }
}
