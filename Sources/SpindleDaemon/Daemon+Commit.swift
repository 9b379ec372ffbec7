import BlockCommon
import BlockGraph
import BlockJobs
import ControlThread
import Monitor

/// block-commit through QMP: the device (an export id, then a node name) resolved to its
/// node, the layers named by node or file name, then the job (BlockJobs/CommitJob.swift).
extension Daemon {
    public func blockCommit(_ request: CommitRequest) async throws(QMPError) {
        let device: BlockNode
        if let export = export(id: request.device), let node = graph.servedNode(of: export.backend) {
            device = node
        } else if let node = graph.nodes[NodeName(request.device)] {
            device = node
        } else {
            throw QMPError(.deviceNotFound, "Device '\(request.device)' not found")
        }
        let top: CommitLayerChoice = request.topNode.map { .node($0) } ?? request.top.map { .filename($0) } ?? .unnamed
        let base: CommitLayerChoice = request.baseNode.map { .node($0) } ?? request.base.map { .filename($0) } ?? .unnamed
        // The state file records commands, and an intermediate commit changes a node's
        // recorded backing: not recorded yet, so not done while one is kept.
        if stateFile != nil, let chain = try? graph.commitChain(active: device, top: top, base: base), !chain.isActiveCommit {
            throw QMPError(.genericError, "an intermediate commit (top '\(chain.top.name)' below '\(device.name)') is not recorded in the state file yet; commit the active layer, or run without --state-file")
        }
        // Nor is a pivot onto a node opened from an image's header (its name is generated).
        if stateFile != nil, let chain = try? graph.commitChain(active: device, top: top, base: base), chain.isActiveCommit, chain.base.isImplicit {
            throw QMPError(.genericError, "committing the active layer into '\(chain.base.display.file)' (opened from an image's header, node '\(chain.base.name)') moves the export onto a node the state file cannot name; add the base with blockdev-add and backing=, or run without --state-file")
        }
        let options = CommitOptions(jobID: request.jobID, device: device.name, top: top, base: base, backingFile: request.backingFile,
                                    speed: request.speed, autoFinalize: request.autoFinalize, autoDismiss: request.autoDismiss)
        do throws(JobError) {
            try await CommitJob.start(options, graph: graph, registry: jobs)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }
}
