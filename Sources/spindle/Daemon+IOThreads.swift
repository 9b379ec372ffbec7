import ControlThread
import Exports
import Glibc
import IOThreads
import Logging

/// Which IOThread serves each virtqueue. An export that names an iothread gets it for every
/// queue (as qsd); one that names none gets automatic placement: one pinned IOThread per
/// CPU, created when first needed, and each queue goes to the least-loaded CPU.
extension Daemon: IOThreadProvider {
    func ioThread(forExport exportID: String, queue: Int, ring: UnsafeRawPointer) -> IOThread? {
        if let named = export(id: exportID)?.options.iothread, let thread = iothreads[named] {
            logger.info("queue placement", metadata: ["export": "\(exportID)", "queue": "\(queue)", "iothread": "\(thread.id)",
                                                      "cpu": "\(thread.cpu.map(String.init) ?? "any")", "why": "export names iothread \(named)"])
            return thread
        }
        return automaticThread(exportID: exportID, queue: queue, ring: ring)
    }

    func queueStopped(export exportID: String, queue: Int, thread: IOThread) {
        if let cpu = thread.cpu, thread.id == Self.automaticThreadID(cpu: cpu) {
            automaticLoad[cpu, default: 1] -= 1
        }
    }

    static func automaticThreadID(cpu: Int) -> String { "auto-cpu\(cpu)" }

    private func automaticThread(exportID: String, queue: Int, ring: UnsafeRawPointer) -> IOThread? {
        let cpus = Self.allowedCPUs()
        let cpu = cpus.min { (automaticLoad[$0] ?? 0, $0) < (automaticLoad[$1] ?? 0, $1) } ?? 0
        automaticLoad[cpu, default: 0] += 1
        let id = Self.automaticThreadID(cpu: cpu)
        let thread: IOThread
        if let existing = iothreads[id] {
            thread = existing
        } else {
            do {
                thread = try startAutomaticThread(id: id, cpu: cpu)
            } catch {
                automaticLoad[cpu, default: 1] -= 1
                logger.error("export \(exportID) queue \(queue): cannot create an IOThread for CPU \(cpu): \(error); the queue does not start")
                return nil
            }
        }
        logger.info("queue placement", metadata: ["export": "\(exportID)", "queue": "\(queue)", "iothread": "\(id)", "cpu": "\(cpu)",
                                                  "why": "automatic: CPU \(cpu) serves the fewest queues (\((automaticLoad[cpu] ?? 1) - 1) before this one)"])
        return thread
    }

    /// CPUs this process may run on.
    static func allowedCPUs() -> [Int] {
        let count = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return Array(0..<max(1, count))
    }
}
