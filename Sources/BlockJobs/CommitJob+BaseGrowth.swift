import BlockCommon
import BlockGraph
import ControlThread

extension CommitJob {
    /// A base smaller than top grows to top's size first, as QEMU's commit does (a larger
    /// base stays as it is). Nil if done, else the refusal (the base could not grow).
    static func growBaseIfSmaller(_ chain: CommitChain, graph: BlockGraph) async -> JobError? {
        guard chain.base.length < chain.top.length else { return nil }
        do throws(BlockError) {
            try await graph.growCommitBase(chain.base, to: chain.top.length)
            return nil
        } catch {
            return JobError(error.message)
        }
    }
}
