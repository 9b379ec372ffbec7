import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import IOThreads
import Logging
import Monitor
import SpindleOptions

/// Where an rbd node's requests run. One image handle has one completion eventfd, so in
/// this version every queue of every export on an rbd node runs on one IOThread: the one
/// the node's first queue was placed on (by the export's iothread option or automatic
/// placement). Later queues are redirected there, with a log line; x-queue-move is refused.
/// The node's completion watcher starts on that thread with its first queue and stops
/// when its last queue stops (so a closing node never has a watcher).
struct RbdBinding {
    let io: RbdIO
    let thread: IOThread
    let watcher: RbdCompletionWatcher
    var queues: Set<QueueKey>
}

extension Daemon {
    /// The rbd data path an export's queues end up in (its node, or below an x-delay filter).
    func rbdIO(forExport exportID: String) -> RbdIO? {
        guard let nodeName = export(id: exportID)?.options.nodeName, let node = graph.nodes[nodeName] else { return nil }
        return Self.rbdIO(below: node.io)
    }

    private static func rbdIO(below io: any BlockDriverIO) -> RbdIO? {
        if let rbd = io as? RbdIO { return rbd }
        if let delay = io as? DelayFilterIO { return rbdIO(below: delay.child) }
        return nil
    }

    /// Before normal placement: the IOThread an rbd-backed queue must run on, if its node
    /// already has one.
    func rbdBoundThread(forExport exportID: String, queue: Int) -> IOThread? {
        guard let io = rbdIO(forExport: exportID), var binding = rbdBindings[ObjectIdentifier(io)] else { return nil }
        binding.queues.insert(QueueKey(export: exportID, queue: queue))
        rbdBindings[ObjectIdentifier(io)] = binding
        logger.info("queue placement", metadata: ["export": "\(exportID)", "queue": "\(queue)", "iothread": "\(binding.thread.id)",
                                                  "why": "rbd node '\(io.nodeName)' runs all its queues on one IOThread"])
        return binding.thread
    }

    /// After normal placement of an rbd-backed queue that had no thread yet: its node's
    /// watcher starts there (posted: it runs before the queue's own start on that thread).
    func rbdBind(exportID: String, queue: Int, to thread: IOThread) {
        guard let io = rbdIO(forExport: exportID), rbdBindings[ObjectIdentifier(io)] == nil else { return }
        let watcher = RbdCompletionWatcher(io: io, thread: thread)
        let logger = self.logger
        thread.post { _ in
            do throws(CompletionQueueFull) {
                try watcher.start()
            } catch {
                logger.error("rbd node '\(io.nodeName)': cannot watch its completions on iothread \(thread.id): \(error); its requests will not complete")
            }
        }
        rbdBindings[ObjectIdentifier(io)] = RbdBinding(io: io, thread: thread, watcher: watcher,
                                                       queues: [QueueKey(export: exportID, queue: queue)])
        logger.info("rbd node '\(io.nodeName)' served by iothread \(thread.id)")
    }

    /// A queue stopped: the last one of an rbd node stops the node's watcher.
    func rbdQueueStopped(export exportID: String, queue: Int) {
        let key = QueueKey(export: exportID, queue: queue)
        guard let id = rbdBindings.first(where: { $0.value.queues.contains(key) })?.key else { return }
        rbdBindings[id]?.queues.remove(key)
        guard let binding = rbdBindings[id], binding.queues.isEmpty else { return }
        rbdBindings[id] = nil
        let watcher = binding.watcher
        binding.thread.post { _ in watcher.stop() }
    }

    /// x-queue-move cannot split an rbd node's queues over IOThreads in this version.
    func refuseRbdQueueMove(exportID: String) throws(QMPError) {
        guard let io = rbdIO(forExport: exportID) else { return }
        throw QMPError(.genericError, "export '\(exportID)' is on rbd node '\(io.nodeName)', whose queues all run on one IOThread (one image handle); x-queue-move is not supported for it")
    }

    /// A mirror job does its I/O from its own thread and ring, which an rbd node's completion
    /// watcher cannot route to: refused until completions are routed per thread.
    func refuseRbdMirror(source: NodeName, target: NodeName) throws(QMPError) {
        for (role, name) in [("source", source), ("target", target)] {
            guard let node = graph.nodes[name], let io = Self.rbdIO(below: node.io) else { continue }
            throw QMPError(.genericError, "blockdev-mirror with an rbd \(role) (node '\(io.nodeName)') is not supported yet")
        }
    }

    /// Creates the `secret` objects of the command line (before any node opens).
    func addSecrets(_ secrets: [SecretObjectOptions]) throws {
        for secret in secrets {
            do {
                try SecretStore.shared.add(secret)
            } catch {
                throw DaemonError("--object id=\(secret.id): \(error.message)")
            }
        }
    }

    /// object-add qom-type=secret.
    public func secretAdd(_ options: SecretObjectOptions) throws(QMPError) {
        guard iothreads[options.id] == nil else {
            throw QMPError(.genericError, "attempt to add duplicate property '\(options.id)' to object (type 'container')")
        }
        do {
            try SecretStore.shared.add(options)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    /// object-del of a secret: refused while an rbd node uses it. False: no such secret.
    func secretDel(id: String) throws(QMPError) -> Bool {
        guard SecretStore.shared.contains(id) else { return false }
        for node in graph.nodes.values.sorted(by: { $0.name.rawValue < $1.name.rawValue }) {
            if case .rbd(let rbd) = node.options.driver, rbd.keySecret == id {
                throw QMPError(.genericError, "secret '\(id)' is in use by node '\(node.name)'; delete the node first (blockdev-del)")
            }
        }
        _ = SecretStore.shared.remove(id)
        return true
    }
}
