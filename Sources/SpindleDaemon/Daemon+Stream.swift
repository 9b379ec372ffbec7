import BlockCommon
import BlockGraph
import BlockJobs
import ControlThread
import Monitor

/// block-stream (qcow2): the job's events go out as every job's (Daemon+Jobs.swift).
extension Daemon {
    public func blockStream(_ request: StreamRequest) async throws(QMPError) {
        // `device` may name an export (QEMU: a BlockBackend) or a node.
        var device = NodeName(request.device)
        if graph.nodes[device] == nil, let export = export(id: request.device), let node = graph.servedNode(of: export.backend) {
            device = node.name
        }
        var base = request.base
        var baseNode = request.baseNode.map(NodeName.init)
        if let bottom = request.bottom {
            do throws(BlockError) {
                (base, baseNode) = try graph.streamBase(device: device, bottom: NodeName(bottom), backingFile: request.backingFile)
            } catch {
                throw QMPError(.genericError, error.message)
            }
        }
        let options = StreamOptions(jobID: request.jobID, device: device, base: base,
                                    baseNode: baseNode, backingFile: request.backingFile,
                                    speed: request.speed, autoFinalize: request.autoFinalize, autoDismiss: request.autoDismiss)
        do throws(JobError) {
            try StreamJob.start(options, graph: graph, registry: jobs) { [weak self] plan in self?.recordStreamedChain(plan) }
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    /// With --state-file: the node's new backing, so that a restart opens the new chain.
    func recordStreamedChain(_ plan: StreamPlan) {
        guard let recorder = stateFile else { return }
        let backing: JSONValue? = plan.base == nil ? .null : plan.base!.node.map { .string($0.rawValue) }
        let readOnly = graph.nodes[plan.top]?.readOnly ?? false
        guard recorder.model.recordBackingChange(node: plan.top.rawValue, backing: backing, readOnly: readOnly) else {
            // A command-line node whose chain came from its header: the header says the truth.
            guard plan.copied.first?.node != nil else { return }
            logger.warning("state file: node '\(plan.top)' comes from the command line; its new chain after block-stream is not recorded (after a restart it is opened as the command line says: the same data, the streamed layers in use again); change the command line to match")
            return
        }
        recordGraphChanges()
    }
}
