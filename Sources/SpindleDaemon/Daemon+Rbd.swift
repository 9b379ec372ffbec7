import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import IOThreads
import Logging
import Monitor
import SpindleOptions

extension Daemon {
    /// The rbd data path an export's queues end up in (its node, or below x-delay or throttle filters).
    func rbdIO(forExport exportID: String) -> RbdIO? {
        guard let nodeName = export(id: exportID)?.options.nodeName, let node = graph.nodes[nodeName] else { return nil }
        return Self.rbdIO(below: node.io)
    }

    private static func rbdIO(below io: any BlockDriverIO) -> RbdIO? {
        if let rbd = io as? RbdIO { return rbd }
        if let delay = io as? DelayFilterIO { return rbdIO(below: delay.child) }
        if let throttle = io as? ThrottleFilterIO { return rbdIO(below: throttle.child) }
        return nil
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
