import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import Glibc
import Logging

/// The control-thread half of a stream job (block-stream): it checks the request, holds the
/// top node writable and the chain's nodes against deletion while the copier thread pulls
/// the data of the layers above the base into the top, and at the end, under drain, drops
/// those layers (BlockGraph.finishStream). Cancelled or failed, the chain stays as it was:
/// what was copied already is the same data the chain held, so the image is consistent.
@ControlActor
public final class StreamJob {
    public let options: StreamOptions
    let plan: StreamPlan
    private let graph: BlockGraph
    /// Holds the top writable (its image's write lock) while the job writes it.
    private var topUser: BlockBackend?
    /// Told once the streamed layers were dropped (the daemon records the new chain).
    private let onFinished: (@ControlActor (StreamPlan) -> Void)?
    private let logger: Logger

    static let blocker = "block device is in use by block job: stream"

    private init(options: StreamOptions, plan: StreamPlan, graph: BlockGraph, topUser: BlockBackend,
                 onFinished: (@ControlActor (StreamPlan) -> Void)?) {
        self.options = options
        self.plan = plan
        self.graph = graph
        self.topUser = topUser
        self.onFinished = onFinished
        var logger = Logger(label: "spindle.job")
        logger[metadataKey: "job"] = "\(options.jobID)"
        self.logger = logger
    }

    /// Starts a stream into `options.device`. Errors are QEMU's texts for the command.
    /// `onFinished` is called (on the control thread) once the node backs onto the base.
    @discardableResult
    public static func start(_ options: StreamOptions, graph: BlockGraph, registry: JobRegistry,
                             onFinished: (@ControlActor (StreamPlan) -> Void)? = nil) throws(JobError) -> StreamJob {
        ControlActor.preconditionOnControlThread("StreamJob.start")
        let plan: StreamPlan
        do throws(BlockError) {
            plan = try graph.streamPlan(device: options.device, base: options.base, baseNode: options.baseNode,
                                        backingFile: options.backingFile)
        } catch {
            throw JobError(error.message)
        }
        let driver = try registry.withJobLock { jobs throws(JobError) in
            try jobs.create(id: options.jobID, type: "stream", options: JobOptions(
                autoFinalize: options.autoFinalize, autoDismiss: options.autoDismiss, speed: options.speed), registry: registry)
        }
        let topUser: BlockBackend
        do {
            topUser = try graph.createBackend(name: "#stream-\(options.jobID)", node: plan.top, permissions: [.write])
        } catch {
            driver.discard()
            throw JobError(error.message)
        }
        let job = StreamJob(options: options, plan: plan, graph: graph, topUser: topUser, onFinished: onFinished)
        for name in job.blockedNodes { graph.setBlocker(blocker, on: name) }
        job.logger.notice("stream started", metadata: [
            "node": "\(plan.top)", "base": "\(plan.base?.filename ?? "none (whole chain)")",
            "layers": "\(plan.copied.map(\.filename).joined(separator: ","))", "speed": "\(options.speed)"])
        driver.setProgress(current: 0, total: plan.topIO.length)
        let copier = StreamCopier(job: job, driver: driver, plan: plan, jobID: options.jobID)
        let started = driver.start()
        pthread_detach(PlainThread.spawn { copier.run(started: started) })  // nobody joins it: it ends with the job
        return job
    }

    /// The top and the graph nodes of the streamed layers: none may go or get new users.
    private var blockedNodes: [NodeName] {
        [plan.top] + plan.copied.compactMap(\.node)
    }

    // MARK: called by the copier thread (through runOnControlThread)

    /// The copy is done and the job commits: drop the streamed layers. Returns an error text
    /// if that failed (the chain then stays; the top holds their data too). The top stays
    /// blocked until the switch is over (other commands run while its users drain); the
    /// streamed nodes do not (the old chain may be needed again if the switch fails).
    func finish() async -> String? {
        for name in plan.copied.compactMap(\.node) where graph.nodes[name]?.blocker == Self.blocker {
            graph.setBlocker(nil, on: name)
        }
        var failure: String?
        do throws(BlockError) {
            try await graph.finishStream(plan)
        } catch {
            logger.error("stream: dropping the streamed layers failed; the node keeps its chain", metadata: [
                "node": "\(plan.top)", "error": "\(error.message)"])
            failure = error.message
        }
        await release()
        if failure == nil { onFinished?(plan) }
        return failure
    }

    /// Cancel or failure: the chain stays as it is.
    func abandon() async {
        await release()
    }

    private func release() async {
        for name in blockedNodes where graph.nodes[name]?.blocker == Self.blocker { graph.setBlocker(nil, on: name) }
        if let topUser {
            self.topUser = nil
            await graph.deleteBackend(topUser)
        }
    }
}
