import BlockCommon
import BlockGraph
import ControlThread
import Logging

// The graph changes a commit's copier asks for (through runOnControlThread), each under
// drain: an active commit's pivot onto base (or giving the guest top back), an
// intermediate commit's switch of the overlay onto base.
extension CommitJob: MirrorCopierHost {
    /// Active: top's BlockBackends (the final sync must see no new write). Intermediate:
    /// every BlockBackend whose reads pass through the overlay (the backing switch).
    func drainForFinalSync() async {
        if chain.isActiveCommit {
            drained = graph.users(of: chain.top.name)
        } else if let overlay = chain.overlay {
            drained = graph.nodesReading(through: overlay).flatMap { graph.users(of: $0.name) }
        }
        for backend in drained { await graph.drain(backend) }
    }

    func finishDrained(pivot: Bool) async -> String? {
        var failure: String?
        if chain.isActiveCommit {
            if pivot {
                do {
                    try graph.moveBackends(drained, from: chain.top.name, to: chain.base.name)
                    keepBaseWritable()  // the guest writes it now
                } catch {
                    failure = error.message
                    graph.setDataPath(chain.top.io, for: drained)
                }
            } else {
                graph.setDataPath(chain.top.io, for: drained)
            }
        } else if pivot, let overlay = chain.overlay {
            do {
                try graph.switchBacking(of: overlay, from: chain.top, to: chain.base,
                                        backingFile: options.backingFile ?? chain.base.display.file)
            } catch {
                failure = error.message
            }
        }
        for backend in drained { graph.resume(backend) }
        drained = []
        await release()
        if pivot && failure == nil {
            dropCommittedLayers()
            logger.notice(chain.isActiveCommit ? "commit completed: the guest is on the base" : "commit completed: the overlay is backed by the base",
                          metadata: ["top": "\(chain.top.name)", "base": "\(chain.base.name)"])
        }
        return failure
    }

    func restoreSource() async {
        if chain.isActiveCommit {
            let users = graph.users(of: chain.top.name)
            await graph.withDrained(users) { graph.setDataPath(chain.top.io, for: users) }
        }
        await release()
    }
}
