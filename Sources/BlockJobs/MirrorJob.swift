import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import Glibc
import Logging

/// The control-thread half of a mirror job (blockdev-mirror): it checks the request, puts
/// the mirror filter over the source's BlockBackends, starts the copier thread, and makes
/// the graph changes the copier asks for, each under drain: restoring the source (cancel,
/// error) or moving the BlockBackends to the target (pivot, on job-complete).
@ControlActor
public final class MirrorJob {
    public let options: MirrorOptions
    private let graph: BlockGraph
    private let filter: MirrorFilterIO
    private let sourceIO: any BlockDriverIO
    /// Holds the target open, writable and locked for the job's writes while it runs.
    private var targetUser: BlockBackend?
    /// The BlockBackends drained for the final sync, resumed after the pivot (or not).
    private var drained: [BlockBackend] = []
    private let logger: Logger

    static let blocker = "block device is in use by block job: mirror"

    private init(options: MirrorOptions, graph: BlockGraph, filter: MirrorFilterIO, sourceIO: any BlockDriverIO, targetUser: BlockBackend) {
        self.options = options
        self.graph = graph
        self.filter = filter
        self.sourceIO = sourceIO
        self.targetUser = targetUser
        var logger = Logger(label: "spindle.job")
        logger[metadataKey: "job"] = "\(options.jobID)"
        self.logger = logger
    }

    /// Starts a mirror of `options.source` to `options.target`. Errors are QEMU's texts for
    /// the command; problems found once the job exists end the job instead (as QEMU's
    /// "Source and target image have different sizes").
    @discardableResult
    public static func start(_ options: MirrorOptions, graph: BlockGraph, registry: JobRegistry) async throws(JobError) -> MirrorJob? {
        ControlActor.preconditionOnControlThread("MirrorJob.start")
        guard let source = graph.nodes[options.source] else {
            throw JobError("Cannot find device='\(options.source)' nor node-name='\(options.source)'")
        }
        guard let target = graph.nodes[options.target] else {
            throw JobError("Cannot find device='\(options.target)' nor node-name='\(options.target)'")
        }
        for node in [source, target] where node.blocker != nil {
            throw JobError("Node '\(node.name)' is busy: \(node.blocker!)")
        }
        guard source !== target else { throw JobError("Can't mirror node into itself") }
        // Writes through a throttle node above the source would bypass the mirror's filter.
        if let filter = graph.throttleParents(of: source).first {
            throw JobError("Node '\(source.name)' is the file of throttle node '\(filter.name)'; mirror '\(filter.name)' instead")
        }
        let targetUsers = graph.users(of: target.name)
        guard targetUsers.isEmpty else {
            // Someone else writing the target would be overwritten by the copy, or corrupt it.
            throw JobError("Node '\(target.name)' is in use by \(targetUsers.map(\.name).joined(separator: ", ")); a mirror target must not be used by anything else")
        }
        let driver = try registry.withJobLock { jobs throws(JobError) in
            try jobs.create(id: options.jobID, type: "mirror", options: JobOptions(
                autoFinalize: options.autoFinalize, autoDismiss: options.autoDismiss, speed: options.speed), registry: registry)
        }
        if target.readOnly {
            driver.discard()
            throw JobError("Block node is read-only")
        }
        let targetUser: BlockBackend
        do {
            targetUser = try graph.createBackend(name: "#mirror-\(options.jobID)", node: target.name, permissions: [.write])
        } catch {
            driver.discard()
            throw JobError(error.message)
        }
        guard source.length == target.length else {
            await graph.deleteBackend(targetUser)
            _ = driver.start()
            driver.conclude(.failed("Source and target image have different sizes"))
            return nil
        }
        let bitmap = DirtyBitmap(length: source.length, granularity: options.granularity)
        do throws(JobError) {
            try Qcow2MirrorTop.markInitialCopy(bitmap, options: options, source: source, target: target, graph: graph)
        } catch {
            await graph.deleteBackend(targetUser)
            driver.discard()
            throw error
        }
        let filter = MirrorFilterIO(source: source.io, target: target.io, bitmap: bitmap)
        let job = MirrorJob(options: options, graph: graph, filter: filter, sourceIO: source.io, targetUser: targetUser)
        graph.setBlocker(blocker, on: source.name)
        graph.setBlocker(blocker, on: target.name)
        // From here on every guest write to the source is tracked.
        let users = graph.users(of: source.name)
        await graph.withDrained(users) { graph.setDataPath(filter, for: users) }
        job.logger.notice("mirror started", metadata: [
            "source": "\(options.source)", "target": "\(options.target)", "size": "\(source.length)",
            "granularity": "\(options.granularity)", "speed": "\(options.speed)"])
        driver.setProgress(current: 0, total: source.length)  // query-jobs shows the whole task at once
        let copier = MirrorCopier(job: job, driver: driver, filter: filter, length: source.length, options: options)
        // Running before the command returns, as QEMU's job_start: a query-jobs right after
        // blockdev-mirror sees "running", not "created". false: cancelled while we drained.
        let started = driver.start()
        pthread_detach(PlainThread.spawn { copier.run(started: started) })  // nobody joins it: it ends with the job
        return job
    }

    // MARK: called by the copier thread (through runOnControlThread)

    /// Drains every BlockBackend of the source for the final sync: no guest write is in
    /// flight or starts until `finish`.
    func drainForFinalSync() async {
        drained = graph.users(of: options.source)
        for backend in drained { await graph.drain(backend) }
    }

    /// Ends a final sync: with `pivot`, moves the drained BlockBackends to the target;
    /// otherwise (cancel, failure) gives them the source back. Resumes them either way.
    /// Returns an error text if the pivot was refused (the guest then stays on the source).
    func finishDrained(pivot: Bool) async -> String? {
        var failure: String?
        if pivot {
            do {
                try graph.moveBackends(drained, from: options.source, to: options.target)
            } catch {
                failure = error.message
                graph.setDataPath(sourceIO, for: drained)
            }
        } else {
            graph.setDataPath(sourceIO, for: drained)
        }
        for backend in drained { graph.resume(backend) }
        drained = []
        await release()
        if pivot && failure == nil {
            logger.notice("mirror completed: switched to the target", metadata: ["source": "\(options.source)", "target": "\(options.target)"])
        }
        return failure
    }

    /// Cancel or failure while not drained: the source's BlockBackends get the source back.
    func restoreSource() async {
        let users = graph.users(of: options.source)
        await graph.withDrained(users) { graph.setDataPath(sourceIO, for: users) }
        await release()
    }

    private func release() async {
        graph.setBlocker(nil, on: options.source)
        graph.setBlocker(nil, on: options.target)
        if let targetUser {
            self.targetUser = nil
            await graph.deleteBackend(targetUser)
        }
    }
}
