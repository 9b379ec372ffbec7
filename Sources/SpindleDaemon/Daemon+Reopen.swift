import BlockCommon
import BlockGraph
import ControlThread
import Logging
import Monitor
import SpindleOptions

/// blockdev-reopen, the old active layer made read-only after a snapshot, and the state
/// file's record of nodes whose read-only mode changed at run time.
extension Daemon {
    public func blockdevReopen(_ options: [BlockdevOptions], arguments: [JSONObject]) async throws(QMPError) {
        do throws(BlockError) {
            try await graph.reopen(options: options)
        } catch {
            throw QMPError(.genericError, error.message)
        }
        guard let recorder = stateFile else { return }
        // One entry per node, so that a later reopen of the same node replaces it; without
        // "backing" (omitted: kept), which a later commit or stream may change.
        for var object in arguments {
            object["backing"] = nil
            recorder.model.record(StateEntry(command: "blockdev-reopen", arguments: JSONObject(["options": .array([.object(object)])])))
        }
        recordGraphChanges()
    }

    /// After a snapshot the old active layer is only a backing layer: read-only, as QEMU
    /// drops its write permission (its write lock goes, the clusters it reserved for
    /// allocation are given back). The snapshot stands if this fails.
    func reopenOldActiveLayerReadOnly(_ node: BlockNode) async {
        guard !node.readOnly, node.driverName == "qcow2" || node.driverName == "file" else { return }
        do throws(BlockError) {
            try await graph.reopenDrained(node, readOnly: true)
        } catch {
            logger.warning("snapshot: the old active layer '\(node.name)' stays read-write: \(error.message)")
        }
    }

    /// Nodes the state creates whose read-only mode changed without a blockdev-reopen (a
    /// commit that moved the guest onto a read-only base leaves it read-write) get an entry
    /// of their own, so that a restart opens them as they are. Runs before exports' pivots
    /// are recorded: their entries come after it.
    func recordReadOnlyChanges(_ recorder: StateFileRecorder) {
        for key in recorder.model.liveKeys(.node) {
            guard let node = graph.nodes[NodeName(key.id)], let recorded = recorder.model.recordedReadOnly(node: key.id),
                  recorded != node.readOnly, let options = Self.reopenArguments(node.options) else { continue }
            recorder.model.record(StateEntry(command: "blockdev-reopen", arguments: JSONObject(["options": .array([.object(options)])])))
        }
    }

    /// A file or qcow2 node's options as blockdev-add (and blockdev-reopen) take them.
    static func reopenArguments(_ options: BlockdevOptions) -> JSONObject? {
        switch options.driver {
        case .file(let file):
            var object = fileArguments(file)
            object["node-name"] = .string(options.nodeName.rawValue)
            return object
        case .qcow2(let qcow2):
            var object = JSONObject(["driver": .string("qcow2"), "node-name": .string(options.nodeName.rawValue)])
            switch qcow2.file {
            case .node(let name): object["file"] = .string(name.rawValue)
            case .inline(let file): object["file"] = .object(fileArguments(file))
            }
            // No "backing": a reopen keeps the node's backing, whatever a job made it since.
            if let size = qcow2.l2CacheSize { object["l2-cache-size"] = .number("\(size)") }
            object["read-only"] = .bool(qcow2.readOnly)
            if !options.active { object["active"] = .bool(false) }
            return object
        default:
            return nil
        }
    }

    private static func fileArguments(_ file: FileOptions) -> JSONObject {
        var object = JSONObject(["driver": .string("file"), "filename": .string(file.filename)])
        if file.direct { object["cache"] = .object(JSONObject(["direct": .bool(true)])) }
        if file.noFlush {
            var cache = JSONObject()
            if file.direct { cache["direct"] = .bool(true) }
            cache["no-flush"] = .bool(true)
            object["cache"] = .object(cache)
        }
        object["read-only"] = .bool(file.readOnly)
        if file.autoReadOnly { object["auto-read-only"] = .bool(true) }
        if !file.locking { object["locking"] = .string("off") }
        if file.discardUnmap { object["discard"] = .string("unmap") }
        return object
    }
}

extension StateModel {
    /// The read-only mode a replay gives node `id`: its last blockdev-reopen entry's, else
    /// its blockdev-add's; nil when the state does not say (a command-line node, an overlay
    /// made by blockdev-snapshot-sync).
    func recordedReadOnly(node id: String) -> Bool? {
        let key = StateKey(kind: .node, id: id)
        for entry in entries.reversed() where entry.key == key {
            switch entry.command {
            case "blockdev-reopen":
                guard case .array(let list)? = entry.arguments["options"], case .object(let options)? = list.first else { return nil }
                return Self.readOnly(in: options)
            case "blockdev-add":
                return Self.readOnly(in: entry.arguments)
            case "blockdev-snapshot-sync":
                return nil
            default:
                continue
            }
        }
        return nil
    }

    private static func readOnly(in options: JSONObject) -> Bool {
        if case .bool(let value)? = options["read-only"] { return value }
        if case .string(let value)? = options["read-only"] { return value == "on" || value == "true" }
        return false
    }
}
