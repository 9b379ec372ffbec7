import BlockCommon
import BlockGraph
import ControlThread
import Logging

/// A commit into a read-only base (QEMU reopens it read-write for the job): base is
/// reopened read-write when the job starts and read-only again when it ends (completed,
/// cancelled or failed), unless an active commit moved the guest onto it. The layers
/// between top and base are not touched.
extension CommitJob {
    /// Reopens a read-only base read-write (draining whoever reads through it); returns
    /// whether it did.
    static func makeBaseWritable(_ chain: CommitChain, graph: BlockGraph) async throws(JobError) -> Bool {
        guard chain.base.readOnly else { return false }
        do {
            try await graph.reopenDrained(chain.base, readOnly: false)
        } catch {
            throw JobError("Base node '\(chain.base.name)' is read-only and cannot be reopened read-write for the commit: \(error.message)")
        }
        Logger(label: "spindle.job").notice("commit: read-only base reopened read-write for the job", metadata: ["base": "\(chain.base.name)"])
        return true
    }

    /// Gives base its read-only mode back (a failure is logged: base then stays writable,
    /// with no writer but the guest's own, if any).
    static func restoreBaseReadOnly(_ chain: CommitChain, graph: BlockGraph, logger: Logger) async {
        guard graph.nodes[chain.base.name] === chain.base else { return }
        do {
            try await graph.reopenDrained(chain.base, readOnly: true)
            logger.notice("commit: base reopened read-only again", metadata: ["base": "\(chain.base.name)"])
        } catch {
            logger.warning("commit: base '\(chain.base.name)' could not be reopened read-only again and stays read-write: \(error.message); reopen it with blockdev-reopen")
        }
    }

    /// An active commit's pivot made base the guest's node: it stays read-write.
    func keepBaseWritable() {
        reopenedBase = false
    }
}
