import BlockCommon
import BlockGraph
import ControlThread
import Exports
import Logging

/// A start-up export whose rbd node waits for the image's exclusive lock, and the control
/// thread's once-a-second attempt to take it.
struct RbdLockRetry {
    let task: Task<Void, Never>
    /// Exports created for this wait (with or without allow-inactive).
    var exportIDs: [String]
}

/// A daemon started while another client holds its rbd image's exclusive lock: a live
/// Spindle, or a dead client whose watch Ceph keeps until osd_client_watch_timeout (30 s by
/// default) and that is not provably this daemon's own dead predecessor (that one's lock is
/// broken at once: RbdStaleLockTakeover). Failing the start then would make a service manager loop and a reconnecting QEMU give up; instead the export listens
/// on an inactive node (a frontend connects, its requests wait in the rings) while the
/// control thread retries activation every second. QMP block-export-add and
/// blockdev-set-active keep refusing at once: an operator wants the answer now.
extension Daemon {
    /// At start-up only: creates the export on an inactive node and starts the retry when
    /// another client holds the lock of an rbd image under a writable export's node.
    /// Nil when no wait is needed (the caller creates the export as usual).
    func exportWaitingForRbdLock(_ options: VhostUserBlkExportOptions) throws -> VhostUserBlkExport? {
        guard startingUp, options.writable, let node = graph.nodes[options.nodeName] else { return nil }
        let holder: String
        if node.isActive, let found = graph.rbdLockHolder(under: node.name) {
            holder = found
        } else if !node.isActive, rbdLockRetries[node.name] != nil {
            holder = "the client it already waits for"  // a second export on the same node
        } else {
            return nil
        }
        graph.inactivateUnusedForLockWait(node.name)
        // Inactive until the lock is taken (finishRbdLockWait); its options stay as given.
        let export = try VhostUserBlkExport(options: options, graph: graph, threads: self, waitsForActivation: true)
        logger.warning("rbd image is in use: client \(holder) holds its exclusive lock (another Spindle serving it, or a dead client not provably this daemon's predecessor, whose watch Ceph keeps until osd_client_watch_timeout, 30 s by default); the export listens and its requests wait; retrying every second until the lock is taken", metadata: [
            "export": "\(options.id)", "node": "\(node.name)"])
        if rbdLockRetries[node.name] == nil {
            rbdLockRetries[node.name] = RbdLockRetry(task: retryRbdLock(node: node.name), exportIDs: [options.id])
        } else {
            rbdLockRetries[node.name]?.exportIDs.append(options.id)
        }
        return export
    }

    private func retryRbdLock(node name: NodeName) -> Task<Void, Never> {
        Task { @ControlActor [weak self] in
            var lastFailure = ""
            var attempts = 0
            while true {
                try? await Task.sleep(nanoseconds: 1_000_000_000)
                guard !Task.isCancelled, let self else { return }
                attempts += 1
                guard let node = graph.nodes[name], !node.isActive, !waitingExports(of: name).isEmpty else {
                    // Activated by blockdev-set-active, or its exports or node deleted.
                    finishRbdLockWait(node: name, took: false)
                    return
                }
                do throws(BlockError) {
                    try graph.activate(node: name)
                    logger.notice("took the rbd image's exclusive lock after \(attempts) attempt(s): node active, waiting requests released", metadata: [
                        "node": "\(name)"])
                    finishRbdLockWait(node: name, took: true)
                    return
                } catch {
                    if error.message != lastFailure {
                        lastFailure = error.message
                        logger.warning("still waiting for the rbd image's exclusive lock: \(error.message)", metadata: ["node": "\(name)"])
                    }
                }
            }
        }
    }

    /// The exports created for the wait on `node` that still exist and serve it.
    private func waitingExports(of node: NodeName) -> [VhostUserBlkExport] {
        (rbdLockRetries[node]?.exportIDs ?? []).compactMap(export(id:)).filter { $0.options.nodeName == node }
    }

    private func finishRbdLockWait(node: NodeName, took: Bool) {
        let exports = waitingExports(of: node)
        rbdLockRetries[node] = nil
        // Given without allow-inactive: from now on they keep their node active, as usual.
        if graph.nodes[node]?.isActive == true {
            for export in exports where !export.options.allowInactive { graph.forbidInactive(export.backend) }
        }
        if !took {
            logger.notice("stopped waiting for the rbd image's exclusive lock (node activated, or its exports deleted)", metadata: ["node": "\(node)"])
        }
    }

    /// Shutdown: no retry runs on after the nodes close.
    func cancelRbdLockRetries() {
        for retry in rbdLockRetries.values { retry.task.cancel() }
        rbdLockRetries.removeAll()
    }
}
