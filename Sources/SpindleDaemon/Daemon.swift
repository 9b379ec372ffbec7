import BlockCommon
import BlockGraph
import BlockJobs
import ControlThread
import Exports
import IOThreads
import Logging
import Monitor
import Placement
import SpindleOptions

public let spindleVersion = "0.1.0"

/// The daemon's global state, owned by the control thread: the block graph, the IOThreads
/// and the exports. Built from the command line at start, torn down in reverse at shutdown.
/// The executable keeps one; tests make their own.
@ControlActor
public final class Daemon {
    let graph = BlockGraph()
    /// Block jobs (mirror); their events reach the monitors on the control thread.
    let jobs: JobRegistry
    var iothreads: [String: IOThread] = [:]
    private(set) var exports: [VhostUserBlkExport] = []
    let logger = Logger(label: "spindle")
    /// What `quit` does: the executable signals its main thread, which runs the shutdown.
    let requestQuit: @Sendable () -> Void
    /// Which IOThread serves each running queue (Daemon+IOThreads.swift keeps it).
    var placements = QueuePlacementTable()
    /// Decides where automatically placed queues run (nil until the topology is loaded).
    var placer: QueuePlacer?
    private var monitors: [QMPServer] = []
    /// Each open rbd node's IOThread and completion watcher (Daemon+Rbd.swift keeps it).
    var rbdBindings: [ObjectIdentifier: RbdBinding] = [:]
    /// `--state-file`: the recorded QMP changes (Daemon+StateFile.swift); nil without one.
    var stateFile: StateFileRecorder?
    /// sd_notify's socket when run by a Type=notify systemd service.
    let systemd = SystemdNotifier.fromEnvironment()
    /// True while the command line and the state file are applied: an export whose rbd
    /// image another client still locks then waits for it (Daemon+RbdLockRetry.swift).
    var startingUp = false
    /// Per rbd node: the retry that waits for its image's exclusive lock.
    var rbdLockRetries: [NodeName: RbdLockRetry] = [:]

    /// - Parameter requestQuit: called by QMP `quit` (after the reply is queued); it should
    ///   make the owner call `shutdown()`.
    public init(requestQuit: @escaping @Sendable () -> Void) {
        let doorbell = JobEventDoorbell()
        jobs = JobRegistry(doorbell: doorbell.ring)
        self.requestQuit = requestQuit
        doorbell.daemon = self
        watchImageCorruption()
    }

    public func start(_ configuration: DaemonConfiguration) async throws {
        if configuration.daemonize {
            throw DaemonError("--daemonize is not implemented yet; run spindle in the background with your service manager instead")
        }
        for note in configuration.notes { logger.notice("\(note)") }
        _ = try IOContext(entries: 4)  // fail now, clearly, if io_uring is unavailable
        let topology = try NUMATopology.current()
        placer = try QueuePlacer(topology: topology)
        logger.info("host topology: \(topology)")
        for object in configuration.iothreads {
            iothreads[object.id] = try startIOThread(id: object.id, cpu: object.cpu, pollMaxNs: object.pollMaxNs,
                                                     pollGrow: object.pollGrow, pollShrink: object.pollShrink, sleepsInPoll: object.sleepsInPoll)
        }
        try addThrottleGroups(configuration)
        try addSecrets(configuration.secrets)
        for blockdev in configuration.blockdevs {
            try graph.openNode(blockdev)
        }
        startingUp = true
        for options in configuration.exports {
            try addExport(options)
        }
        try await replayStateFile(configuration)
        startingUp = false
        monitors = try startMonitors(configuration: configuration, target: self)
        for (server, options) in zip(monitors, configuration.monitors) where options.chardev.wait {
            logger.notice("waiting for a QMP client on \(server.path) (wait=on)")
            await server.waitForFirstClient()
        }
        logger.info("spindle \(spindleVersion) ready: \(exports.count) export(s), \(graph.nodes.count) node(s)")
    }

    func startIOThread(id: String, cpu: Int?, pollMaxNs: UInt64? = nil, pollGrow: UInt64? = nil,
                               pollShrink: UInt64? = nil, sleepsInPoll: Bool = false) throws -> IOThread {
        let thread = try IOThread(id: id, cpu: cpu, pollMaxNs: pollMaxNs ?? IOThread.defaultPollMaxNs,
                                  pollGrow: pollGrow ?? 0, pollShrink: pollShrink ?? 0, sleepsInPoll: sleepsInPoll)
        thread.start()
        return thread
    }

    func addExport(_ options: VhostUserBlkExportOptions) throws {
        guard !exports.contains(where: { $0.options.id == options.id }) else {
            throw DaemonError("export id '\(options.id)' is already in use")
        }
        guard !exports.contains(where: { $0.options.socketPath == options.socketPath }) else {
            throw DaemonError("socket path '\(options.socketPath)' is already used by another export")
        }
        for named in options.namedIOThreads where iothreads[named] == nil {
            throw DaemonError("--export id=\(options.id): iothread '\(named)' does not exist; add --object iothread,id=\(named) before it")
        }
        let export = try exportWaitingForRbdLock(options) ?? VhostUserBlkExport(options: options, graph: graph, threads: self)
        export.onFrontendChange = { [weak self] in self?.notifyStatus() }
        exports.append(export)
    }

    func export(id: String) -> VhostUserBlkExport? {
        exports.first { $0.options.id == id }
    }

    /// Deletes an export: disconnects its frontend after in-flight requests, removes the
    /// socket, frees the id. Emits BLOCK_EXPORT_DELETED.
    func deleteExport(_ export: VhostUserBlkExport) async {
        exports.removeAll { $0 === export }
        await export.delete()
        emit(event: "BLOCK_EXPORT_DELETED", data: JSONObject(["id": .string(export.options.id)]))
    }

    func startAutomaticThread(id: String, cpu: Int) throws -> IOThread {
        let thread = try startIOThread(id: id, cpu: cpu)
        iothreads[id] = thread
        return thread
    }

    /// Sends a QMP event to every monitor client.
    func emit(event: String, data: JSONObject) {
        for server in monitors { server.emit(event: event, data: .object(data)) }
    }

    /// Stops everything: jobs, monitors, exports (disconnecting frontends after their
    /// in-flight requests complete), IOThreads, then nodes (flushing and unlocking images).
    public func shutdown() async {
        await cancelAllJobs()
        cancelRbdLockRetries()
        for server in monitors { server.close() }
        monitors.removeAll()
        for export in exports.reversed() { await export.delete() }
        exports.removeAll()
        for thread in iothreads.values { thread.stop() }
        iothreads.removeAll()
        graph.closeAllNodes()
        stateFile = nil  // releases the state file's lock
    }
}

public struct DaemonError: Error, CustomStringConvertible {
    public let description: String
    /// The exit status a failed start should end with: 1, or `configurationExitStatus` when
    /// starting again cannot help until someone changes a file (a state file that is
    /// corrupt or contradicts the command line), so a service manager stops restarting.
    public let exitStatus: Int32
    /// EX_CONFIG (sysexits.h); packaging/systemd/spindle.service has RestartPreventExitStatus= for it.
    public static let configurationExitStatus: Int32 = 78
    init(_ description: String, exitStatus: Int32 = 1) {
        self.description = description
        self.exitStatus = exitStatus
    }
}
