import BlockCommon
import BlockIO
import ControlThread

/// Start-up against an rbd image whose exclusive lock another client still holds: typically
/// this very daemon before a crash, whose watch Ceph keeps for ~30 s (osd_client_watch_timeout).
/// Instead of failing the start, the daemon serves the export on an inactive node (requests
/// wait in the rings, as with allow-inactive) and retries activation until the lock is free
/// (the daemon's RbdLockRetry). GS: control thread only.
extension BlockGraph {
    /// The client that holds the exclusive lock of an rbd image under `name` (the node or a
    /// node it is built on) and still watches it, so writing there now would be refused.
    public func rbdLockHolder(under name: NodeName) -> String? {
        ControlActor.preconditionOnControlThread("rbdLockHolder")
        guard let node = nodes[name] else { return nil }
        if let rbd = node.driver as? RbdDriver, let holder = rbd.watchingLockHolder { return holder }
        for child in node.children {
            if let holder = rbdLockHolder(under: child.name) { return holder }
        }
        return nil
    }

    /// Makes a node nobody uses yet, and the nodes it is built on, inactive, so an export
    /// can be created on it without taking the lock (its requests wait until activation).
    public func inactivateUnusedForLockWait(_ name: NodeName) {
        ControlActor.preconditionOnControlThread("inactivateUnusedForLockWait")
        guard let node = nodes[name], node.userCount == 0 || !node.parents.isEmpty else { return }
        for child in node.children { inactivateUnusedForLockWait(child.name) }
        guard node.isActive else { return }
        node.isActive = false
        try? node.updateLocks()  // releasing cannot conflict
    }

    /// After the wait: the BlockBackend no longer accepts an inactive node, as its export
    /// was given without allow-inactive (blockdev-set-active false refuses, as before).
    public func forbidInactive(_ backend: BlockBackend) {
        ControlActor.preconditionOnControlThread("forbidInactive")
        inactiveAllowed.remove(ObjectIdentifier(backend))
    }
}
