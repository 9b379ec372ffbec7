import BlockCommon
import ControlThread

/// Runs one negotiated command against the daemon and returns its `return` value.
/// (`qmp_capabilities` belongs to the connection, which owns the negotiation state.)
@ControlActor
struct QMPCommandDispatcher {
    weak var target: (any MonitorCommandTarget)?
    let identity: QMPIdentity

    /// What `query-commands` lists: every command Spindle runs.
    nonisolated static let commandNames = [
        "qmp_capabilities", "query-version", "query-commands", "quit",
        "blockdev-add", "blockdev-del", "block-export-add", "block-export-del", "block-export-revoke",
        "block_resize", "query-block-exports", "query-named-block-nodes", "query-iothreads",
        "human-monitor-command", "object-add", "object-del", "x-queue-move",
        "blockdev-mirror", "query-jobs", "job-pause", "job-resume", "job-cancel", "job-complete",
        "job-finalize", "job-dismiss", "blockdev-set-active",
        "qom-get", "qom-set", "block_set_io_throttle",
        "query-blockstats",
        "blockdev-create", "blockdev-snapshot", "blockdev-snapshot-sync",
        "block-commit", "block-job-complete",
        "block-stream",
        "block-job-set-speed", "query-block-jobs",
        "blockdev-reopen",
    ]

    func run(_ request: QMPRequest) async throws(QMPError) -> JSONValue {
        var arguments = CommandArguments(request.arguments)
        switch request.command {
        case "query-version":
            try arguments.finish()
            return identity.versionJSON
        case "query-commands":
            try arguments.finish()
            return .array(Self.commandNames.map { .object(["name": .string($0)]) })
        case "quit":
            try arguments.finish()
            return .emptyObject  // the connection calls quit() once this reply is on its way
        default:
            break
        }
        guard Self.commandNames.contains(request.command) else {
            throw QMPError(.commandNotFound, "The command \(request.command) has not been found")
        }
        guard let target else { throw QMPError("Spindle is shutting down") }
        let commands = QMPTargetCommands(target: target)
        switch request.command {
        case "blockdev-add": return try commands.blockdevAdd(request.arguments)
        case "blockdev-del": return try commands.blockdevDel(&arguments)
        case "blockdev-set-active": return try await commands.blockdevSetActive(&arguments)
        case "block-export-add": return try await commands.blockExportAdd(request.arguments)
        case "block-export-del": return try await commands.blockExportDel(&arguments)
        case "block-export-revoke": return try await commands.blockExportRevoke(&arguments)
        case "block_resize": return try await commands.blockResize(&arguments)
        case "query-block-exports": return try commands.queryBlockExports(&arguments)
        case "query-named-block-nodes": return try commands.queryNamedBlockNodes(&arguments)
        case "query-iothreads": return try commands.queryIOThreads(&arguments)
        case "query-blockstats": return try QMPStatsCommands(target: target).queryBlockStats(&arguments)
        case "object-add": return try commands.objectAdd(request.arguments)
        case "object-del": return try commands.objectDel(&arguments)
        case "x-queue-move": return try await commands.moveQueue(&arguments)
        case "blockdev-mirror": return try await QMPJobCommands(target: target).blockdevMirror(&arguments)
        case "query-jobs": return try QMPJobCommands(target: target).queryJobs(&arguments)
        case let name where JobCommand(rawValue: name) != nil:
            return try QMPJobCommands(target: target).job(JobCommand(rawValue: name)!, &arguments)
        case "human-monitor-command": return try await HumanMonitorCommand.run(&arguments, target: target)
        case "qom-get": return try QMPThrottleCommands(target, command: request.command).qomGet(&arguments)
        case "qom-set": return try QMPThrottleCommands(target, command: request.command).qomSet(&arguments)
        case "block_set_io_throttle":
            return try await QMPThrottleCommands(target, command: request.command).blockSetIOThrottle(&arguments)
        case "blockdev-create": return try BlockdevCreateCommands(target: target).blockdevCreate(&arguments)
        case "blockdev-snapshot": return try await SnapshotCommands(target: target).blockdevSnapshot(&arguments)
        case "blockdev-snapshot-sync": return try await SnapshotCommands(target: target).blockdevSnapshotSync(&arguments)
        case "block-commit": return try await CommitCommands(target: target).blockCommit(&arguments)
        case "block-job-complete": return try CommitCommands(target: target).blockJobComplete(&arguments)
        case "block-stream": return try await StreamCommands(target: target).blockStream(&arguments)
        case "block-job-set-speed": return try BlockJobSpeedCommands(target: target).blockJobSetSpeed(&arguments)
        case "query-block-jobs": return try BlockJobSpeedCommands(target: target).queryBlockJobs(&arguments)
        case "blockdev-reopen": return try await BlockdevReopenCommands(target: target).blockdevReopen(request.arguments)
        default: throw QMPError(.commandNotFound, "The command \(request.command) has not been found")
        }
    }
}
