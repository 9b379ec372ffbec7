import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging

/// Graph changes for block jobs (GS: control thread only). Each one that touches a
/// BlockBackend's root requires that BlockBackend to be drained by the caller.
extension BlockGraph {
    /// Marks a node as used by a job (nil clears it): while set it cannot be deleted and gets
    /// no new users.
    public func setBlocker(_ reason: String?, on name: NodeName) {
        ControlActor.preconditionOnControlThread("setBlocker")
        nodes[name]?.blocker = reason
    }

    /// Points drained BlockBackends at another data path over the node they are attached
    /// to (a filter such as the mirror's, or the node's own again), keeping their
    /// permissions. The graph's bookkeeping (which node each uses) does not change.
    public func setDataPath(_ io: any BlockDriverIO, for backends: [BlockBackend]) {
        ControlActor.preconditionOnControlThread("setDataPath")
        for backend in backends where attachments[ObjectIdentifier(backend)] != nil {
            backend.setRoot(io, permissions: backend.permissions)
        }
    }

    /// Moves drained BlockBackends from node `source` to node `target` (a mirror's pivot):
    /// each becomes a user of the target with the same permissions (taking its image
    /// locks), stops being a user of the source (releasing them), and sends its requests to
    /// the target from now on. All or nothing: if the target refuses one, none moves.
    public func moveBackends(_ backends: [BlockBackend], from source: NodeName, to target: NodeName) throws(BlockError) {
        ControlActor.preconditionOnControlThread("moveBackends")
        guard let from = nodes[source], let to = nodes[target] else {
            throw BlockError(errno: ENOENT, "node '\(nodes[source] == nil ? source : target)' does not exist")
        }
        let moving = backends.filter { attachments[ObjectIdentifier($0)] == source }
        var added: [BlockBackend] = []
        do throws(BlockError) {
            for backend in moving {
                precondition(backend.isDrained, "moving BlockBackend '\(backend.name)' while it is not drained")
                try to.setUser(backend, permissions: backend.permissions)
                added.append(backend)
            }
        } catch {
            for backend in added { to.removeUser(backend) }
            throw error
        }
        for backend in moving {
            from.removeUser(backend)
            backend.setRoot(to.io, permissions: backend.permissions)
            attachments[ObjectIdentifier(backend)] = target
        }
        Logger(label: "spindle.block").notice("moved BlockBackends to another node", metadata: [
            "from": "\(source)", "to": "\(target)", "backends": "\(moving.map(\.name).joined(separator: ","))"])
    }
}
