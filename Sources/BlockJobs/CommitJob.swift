import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import Glibc
import Logging

/// The control-thread half of block-commit: what the layers from top down to just above
/// base allocate is copied into base by a MirrorCopier (reading top, which shows those
/// layers over base; writing base).
///
/// Active commit (top is the device's node): like a mirror from top to base. The mirror
/// filter goes over top's BlockBackends (guest writes are marked, and once the first pass
/// is over also written to base). At READY base holds everything; job-complete moves the
/// BlockBackends to base under drain. Cancel (before or after READY) leaves the guest on
/// top; base then holds some of top's data, which top hides: every image consistent.
///
/// Intermediate commit: nothing writes to top or below it, so no filter; once copied (no
/// READY) the overlay above top is switched to base under drain: its header names base,
/// its data path reads base (CommitJob+Finish.swift).
///
/// Either way the layers above base are closed afterwards if nothing else uses them. A
/// read-only base is reopened read-write for the job and read-only again when it ends, but
/// stays read-write once an active commit moved the guest onto it (as QEMU). The job holds
/// a write user on base while it runs; afterwards only readers (an active commit: the
/// guest's BlockBackends, moved there).
@ControlActor
public final class CommitJob {
    public let options: CommitOptions
    let graph: BlockGraph
    let chain: CommitChain
    /// Holds base writable and locked for the job's writes while it runs.
    var baseUser: BlockBackend?
    var drained: [BlockBackend] = []
    /// The nodes this job marked busy (blockedNodes), cleared when it ends.
    var blocked: [BlockNode] = []
    /// Base was read-only and reopened read-write for the job (CommitJob+Reopen.swift).
    var reopenedBase = false
    let logger: Logger

    static let blocker = "block device is in use by block job: commit"
    static let granularity: UInt64 = 64 << 10
    static let bufferSize: UInt64 = 1 << 20

    private init(options: CommitOptions, graph: BlockGraph, chain: CommitChain, baseUser: BlockBackend) {
        self.options = options
        self.graph = graph
        self.chain = chain
        self.baseUser = baseUser
        var logger = Logger(label: "spindle.job")
        logger[metadataKey: "job"] = "\(options.jobID)"
        self.logger = logger
    }

    /// Starts a commit. Errors are QEMU's texts for the command where QEMU has one.
    @discardableResult
    public static func start(_ options: CommitOptions, graph: BlockGraph, registry: JobRegistry) async throws(JobError) -> CommitJob? {
        ControlActor.preconditionOnControlThread("CommitJob.start")
        guard let active = graph.nodes[options.device] else { throw JobError("Device '\(options.device)' not found") }
        let chain: CommitChain
        do {
            chain = try graph.commitChain(active: active, top: options.top, base: options.base)
        } catch {
            throw JobError(error.message)
        }
        if chain.isActiveCommit && options.backingFile != nil {
            throw JobError("'backing-file' specified, but 'top' is the active layer")
        }
        try checkUsable(chain, graph: graph)
        let driver = try registry.withJobLock { jobs throws(JobError) in
            try jobs.create(id: options.jobID, type: "commit", options: JobOptions(
                autoFinalize: options.autoFinalize, autoDismiss: options.autoDismiss, speed: options.speed), registry: registry)
        }
        let reopenedBase: Bool
        do {
            reopenedBase = try await makeBaseWritable(chain, graph: graph)
        } catch {
            driver.discard()
            throw error
        }
        let baseUser: BlockBackend
        do {
            baseUser = try graph.createBackend(name: "#commit-\(options.jobID)", node: chain.base.name, permissions: [.write])
        } catch {
            driver.discard()
            if reopenedBase { await restoreBaseReadOnly(chain, graph: graph, logger: Logger(label: "spindle.job")) }
            throw JobError(error.message)
        }
        if let refusal = await growBaseIfSmaller(chain, graph: graph) {
            await graph.deleteBackend(baseUser)
            driver.discard()
            throw refusal
        }
        let top = chain.top
        let bitmap = DirtyBitmap(length: top.length, granularity: granularity)
        let filter = MirrorFilterIO(source: top.io, target: chain.base.io, bitmap: bitmap)
        let job = CommitJob(options: options, graph: graph, chain: chain, baseUser: baseUser)
        job.reopenedBase = reopenedBase
        job.blocked = blockedNodes(chain, graph: graph)
        for node in job.blocked { graph.setBlocker(blocker, on: node.name) }
        if chain.isActiveCommit {
            // From here on every guest write to top is marked; what was written before is
            // in the images' tables, read next.
            let users = graph.users(of: top.name)
            await graph.withDrained(users) { graph.setDataPath(filter, for: users) }
        }
        do {
            try graph.markAllocated(in: chain.layers, bitmap: bitmap)
        } catch {
            await job.restoreSource()
            _ = driver.start()
            driver.conclude(.failed(error.message))
            return nil
        }
        job.logger.notice("commit started", metadata: [
            "top": "\(top.name)", "base": "\(chain.base.name)", "layers": "\(chain.layers.map(\.name.rawValue).joined(separator: ","))",
            "to-copy": "\(UInt64(bitmap.dirtyCount) * granularity)", "speed": "\(options.speed)"])
        driver.setProgress(current: 0, total: UInt64(bitmap.dirtyCount) * granularity)
        let copierOptions = MirrorOptions(jobID: options.jobID, source: top.name, target: chain.base.name, speed: options.speed,
                                          granularity: granularity, bufferSize: bufferSize,
                                          autoFinalize: options.autoFinalize, autoDismiss: options.autoDismiss)
        let copier = MirrorCopier(job: job, driver: driver, filter: filter, length: top.length, options: copierOptions, kind: "commit",
                                  completesWhenSynced: !chain.isActiveCommit)
        let started = driver.start()
        pthread_detach(PlainThread.spawn { copier.run(started: started) })  // nobody joins it: it ends with the job
        return job
    }

    /// The nodes no other job may use while this one runs: base, the committed layers and,
    /// for an intermediate commit, every node reading through the overlay (another job's
    /// thread reading through it would not be drained for the backing switch).
    static func blockedNodes(_ chain: CommitChain, graph: BlockGraph) -> [BlockNode] {
        [chain.base] + chain.layers + (chain.overlay.map { graph.nodesReading(through: $0) } ?? [])
    }

    /// What must hold before anything changes: nodes free, base writable (a smaller one grows
    /// once the job holds it: growBaseIfSmaller).
    private static func checkUsable(_ chain: CommitChain, graph: BlockGraph) throws(JobError) {
        for node in blockedNodes(chain, graph: graph) {
            if let blocker = node.blocker { throw JobError("Node '\(node.name)' is busy: \(blocker)") }
        }
        for node in [chain.base] + chain.layers {
            guard node.isActive else { throw JobError("Inactive node '\(node.name)' cannot take part in a commit; activate it first (blockdev-set-active)") }
        }
        // Each layer is used by the one above only (top of an active commit: by nothing
        // but its BlockBackends): a filter or a second overlay would read a layer that goes.
        for (index, layer) in chain.layers.enumerated() {
            let expected: Set<NodeName> = index > 0 ? [chain.layers[index - 1].name] : (chain.overlay.map { [$0.name] } ?? [])
            guard layer.parents == expected else {
                let names = layer.parents.subtracting(expected).map(\.rawValue).sorted().joined(separator: "', '")
                throw JobError("Node '\(layer.name)' has node '\(names)' built on it (a filter, I/O limits or another overlay); committing it is not supported")
            }
        }
        let below = chain.isActiveCommit ? Array(chain.layers.dropFirst()) : chain.layers
        let others = graph.users(of: chain.base.name) + below.flatMap { graph.users(of: $0.name) }
        if let other = others.first {
            throw JobError("Node '\(graph.rootNode(of: other)?.name.rawValue ?? "")' is in use by '\(other.name)'; a commit's base and the layers below its top must be used by nothing but the chain")
        }
    }

    /// After the switch: the layers above base close if nothing else uses them (top first, so
    /// each releases the one below). Their image locks go with them; file nodes added with
    /// blockdev-add stay until blockdev-del.
    func dropCommittedLayers() {
        for layer in chain.layers {
            guard let node = graph.nodes[layer.name], node === layer, node.userCount == 0, node.parents.isEmpty else { continue }
            do {
                try graph.closeNode(layer.name)
            } catch {
                logger.warning("commit: could not close committed layer '\(layer.name)': \(error.message); blockdev-del it")
            }
        }
    }

    func release() async {
        for node in blocked { graph.setBlocker(nil, on: node.name) }
        blocked = []
        if let baseUser {
            self.baseUser = nil
            await graph.deleteBackend(baseUser)
        }
        if reopenedBase {
            reopenedBase = false
            await Self.restoreBaseReadOnly(chain, graph: graph, logger: logger)
        }
    }
}
