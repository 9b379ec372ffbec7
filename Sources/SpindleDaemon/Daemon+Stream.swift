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
        let options = StreamOptions(jobID: request.jobID, device: device, base: request.base,
                                    baseNode: request.baseNode.map(NodeName.init), backingFile: request.backingFile,
                                    speed: request.speed, autoFinalize: request.autoFinalize, autoDismiss: request.autoDismiss)
        do throws(JobError) {
            try StreamJob.start(options, graph: graph, registry: jobs)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }
}
