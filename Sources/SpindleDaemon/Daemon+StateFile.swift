import BlockCommon
import ControlThread
import Glibc
import Monitor
import SpindleOptions

/// The state file's live side: the compacted entries, and where they are written.
@ControlActor
final class StateFileRecorder {
    let store: StateFileStore
    var model: StateModel
    var generation: UInt64
    /// Holds the file's lock (StateFileStore.lock) until the recorder goes.
    private let lockFD: Int32

    init(store: StateFileStore, model: StateModel, generation: UInt64, lockFD: Int32) {
        self.store = store
        self.model = model
        self.generation = generation
        self.lockFD = lockFD
    }

    deinit { close(lockFD) }
}

/// `--state-file`: replay at start-up, recording after each QMP change (README: "State file").
extension Daemon {
    /// Replays the state file after the command line, in order, through the QMP commands'
    /// own functions. The whole file is read and checked (checksum, structure) before any
    /// entry is applied; an entry that fails stops the start, and the caller's shutdown
    /// undoes everything the start did (command line included): nothing is half-applied.
    func replayStateFile(_ configuration: DaemonConfiguration) async throws {
        guard let path = configuration.stateFile else { return }
        let store = StateFileStore(path: path)
        let contents: StateFileFormat.Contents
        let lockFD: Int32
        do {
            lockFD = try store.lock()
        } catch {
            throw DaemonError("state file '\(path)': \(error)")
        }
        var locked: Int32? = lockFD
        defer { if let locked { close(locked) } }  // released unless the recorder takes it
        do {
            contents = try store.read().map(StateFileFormat.parse) ?? StateFileFormat.Contents(generation: 0, entries: [])
            try store.checkWritable()
        } catch {
            throw DaemonError("state file '\(path)': \(error) (the previous generation, if any, is '\(store.backupPath)')",
                              exitStatus: DaemonError.configurationExitStatus)
        }
        let commandLine = Self.commandLineKeys(configuration)
        var live = commandLine
        for (index, entry) in contents.entries.enumerated() {
            let name = "state file '\(path)' entry \(index) (\(entry.command)\(entry.key.map { " \($0)" } ?? ""))"
            if let key = entry.key, entry.rule?.effect == .create, live.contains(key), commandLine.contains(key) {
                guard Self.commandLine(configuration, defines: entry) else {
                    throw DaemonError("\(name): the command line also defines \(key), with other options; remove it from the command line, or move the state file away to start without it",
                                      exitStatus: DaemonError.configurationExitStatus)
                }
                logger.notice("\(name): skipped, the command line defines the same \(key)")
                continue
            }
            do {
                _ = try await replayQMPCommand(entry.command, arguments: entry.arguments, on: self)
            } catch {
                throw DaemonError("\(name): \(error.desc)")
            }
            if let key = entry.key, entry.rule?.effect == .create { live.insert(key) }
            if let key = entry.key, entry.rule?.effect == .remove { live.remove(key) }
        }
        stateFile = StateFileRecorder(store: store, model: StateModel(entries: contents.entries, commandLine: commandLine),
                                      generation: contents.generation, lockFD: lockFD)
        locked = nil
        logger.info("state file '\(path)': \(contents.entries.count) entr\(contents.entries.count == 1 ? "y" : "ies") replayed (generation \(contents.generation))")
    }

    /// Records a succeeded QMP command (MonitorCommandTarget); the file is on disk before
    /// the reply is sent.
    public func recordSucceeded(command: String, arguments: JSONObject, result: JSONValue) throws(QMPError) {
        guard let entry = StateEntry.recorded(command: command, arguments: arguments, result: result) else { return }
        defer { notifyStatus() }
        guard let recorder = stateFile else { return }
        recorder.model.record(entry)
        do throws(StateFileError) {
            try saveState(recorder)
        } catch {
            logger.error("state file not written: \(error); '\(command)' took effect but is lost if spindle restarts before the next successful write")
            throw QMPError(.genericError, "'\(command)' took effect, but the state file could not be written: \(error); fix the cause, or the change is lost when spindle restarts")
        }
    }

    /// After a block job completed: a mirror's pivot moved an export to its target node.
    func recordGraphChanges() {
        guard let recorder = stateFile else { return }
        do throws(StateFileError) {
            try saveState(recorder)
        } catch {
            logger.error("state file not written after a block job completed: \(error); an export's new node is lost if spindle restarts before the next successful write")
        }
    }

    /// Brings the model in line with changes no command names (a pivot; nodes drive_del
    /// closed), then writes the next generation.
    private func saveState(_ recorder: StateFileRecorder) throws(StateFileError) {
        recordReadOnlyChanges(recorder)
        for export in exports {
            // The node it serves: below block_set_io_throttle's implicit node (that command's
            // own entry brings the node back), else the root a pivot may have moved.
            guard let root = graph.servedNode(of: export.backend)?.name.rawValue else { continue }
            let recorded = recorder.model.exportNode(id: export.options.id) ?? export.options.nodeName.rawValue
            guard root != recorded else { continue }
            var arguments = recorder.model.exportArguments(id: export.options.id) ?? export.options.qmpArguments
            arguments["node-name"] = .string(root)
            recorder.model.recordPivot(exportID: export.options.id, arguments: arguments)
        }
        for key in recorder.model.liveKeys(.node) where graph.nodes[NodeName(key.id)] == nil {
            recorder.model.record(StateEntry(command: "blockdev-del", arguments: JSONObject(["node-name": .string(key.id)])))
        }
        let bytes = StateFileFormat.serialize(recorder.model.entries, generation: recorder.generation + 1)
        try recorder.store.write(bytes)
        recorder.generation += 1
    }

    static func commandLineKeys(_ configuration: DaemonConfiguration) -> Set<StateKey> {
        Set(configuration.blockdevs.map { StateKey(kind: .node, id: $0.nodeName.rawValue) }
            + configuration.exports.map { StateKey(kind: .export, id: $0.id) }
            + configuration.iothreads.map { StateKey(kind: .object, id: $0.id) })
    }

    /// Whether the command line creates exactly what `entry` creates (then the entry is skipped).
    static func commandLine(_ configuration: DaemonConfiguration, defines entry: StateEntry) -> Bool {
        guard let key = entry.key else { return false }
        switch key.kind {
        case .node:
            return (try? blockdevOptions(fromJSONObject: entry.arguments)).map { options in
                configuration.blockdevs.contains { $0 == options }
            } ?? false
        case .export:
            return (try? exportOptions(fromJSONObject: entry.arguments)).map { options in
                configuration.exports.contains { $0 == options }
            } ?? false
        case .object:
            guard entry.arguments["qom-type"] == .string("iothread") else { return false }
            return (try? iothreadObjectOptions(fromJSONObject: entry.arguments)).map { options in
                configuration.iothreads.contains { $0 == options }
            } ?? false
        }
    }
}
