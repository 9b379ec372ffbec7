import Monitor
import SpindleOptions

/// The daemon's configuration as changed over QMP since the command line: an ordered list of
/// entries that, replayed after the command line, rebuilds what the daemon serves. Kept
/// compacted (an object's entries go when it is deleted), so it never grows with history.
struct StateModel: Sendable, Equatable {
    private(set) var entries: [StateEntry]
    /// The objects the command line creates: deleting one needs an entry of its own.
    let commandLine: Set<StateKey>

    init(entries: [StateEntry] = [], commandLine: Set<StateKey> = []) {
        self.entries = entries
        self.commandLine = commandLine
    }

    /// Applies one succeeded command (a command without a rule changes nothing).
    mutating func record(_ entry: StateEntry) {
        guard let rule = entry.rule else { return }
        switch rule.effect {
        case .create:
            entries.append(entry)
        case .remove:
            guard let key = entry.key else { return }
            let related = entries.indices.filter { entries[$0].key == key }
            if let removal = related.first(where: { entries[$0].rule?.effect == .remove }) {
                // A command-line object deleted before: what came after it (a re-creation and
                // its settings) goes, the earlier deletion stays where later entries expect it.
                drop(related.filter { $0 > removal })
            } else {
                drop(related)
                if commandLine.contains(key) { entries.append(entry) }
            }
        case .modify:
            let key = entry.key
            entries.removeAll { earlier in
                earlier.command == entry.command && (key == nil || earlier.key == key) && earlier.setting == entry.setting
            }
            entries.append(entry)
        }
    }

    /// A mirror pivot moved export `id` to another node: its entry names the new node and
    /// moves to the end (after the target node's entry); a command-line export is deleted and
    /// added again on the new node. `arguments` are the export's block-export-add arguments
    /// with the new node-name. Settings of the export follow it.
    mutating func recordPivot(exportID id: String, arguments: JSONObject) {
        let key = StateKey(kind: .export, id: id)
        let related = entries.indices.filter { entries[$0].key == key }
        let settings = related.filter { entries[$0].rule?.effect == .modify }.map { entries[$0] }
        var moved: [StateEntry] = []
        if let creation = related.last(where: { entries[$0].rule?.effect == .create }) {
            // a state-created export (or one re-created after a deletion entry)
            drop(related.filter { $0 >= creation })
        } else {
            drop(related.filter { entries[$0].rule?.effect == .modify })
            moved.append(.exportDeletion(id: id))
        }
        moved.append(StateEntry(command: "block-export-add", arguments: arguments))
        entries += moved + settings
    }

    /// The node the state's own block-export-add for `id` names, if the state created it.
    func exportNode(id: String) -> String? {
        let key = StateKey(kind: .export, id: id)
        guard let creation = entries.last(where: { $0.key == key && $0.rule?.effect == .create }),
              case .string(let node)? = creation.arguments["node-name"] else { return nil }
        return node
    }

    /// The objects of `kind` that exist after the command line and these entries.
    func liveKeys(_ kind: StateObjectKind) -> Set<StateKey> {
        var live = commandLine.filter { $0.kind == kind }
        for entry in entries {
            guard let key = entry.key, key.kind == kind else { continue }
            switch entry.rule?.effect {
            case .create?: live.insert(key)
            case .remove?: live.remove(key)
            default: break
            }
        }
        return live
    }

    private mutating func drop(_ indices: [Int]) {
        for index in indices.reversed() { entries.remove(at: index) }
    }
}

extension StateModel {
    /// The arguments of the state's own block-export-add for `id`, if the state created it.
    func exportArguments(id: String) -> JSONObject? {
        let key = StateKey(kind: .export, id: id)
        return entries.last { $0.key == key && $0.rule?.effect == .create }?.arguments
    }
}

extension StateModel {
    /// block-stream gave node `id` a new backing (`backing`: a node name, null, or nil: the
    /// chain its header names): the entry that creates the node is rewritten so that a replay
    /// opens it that way (a blockdev-snapshot-sync becomes the blockdev-add of its overlay,
    /// the file being there), in place, and blockdev-snapshot entries that gave it its old
    /// backing go. Returns false if the state does not create the node (the command line
    /// does): then nothing changes.
    mutating func recordBackingChange(node id: String, backing: JSONValue?, readOnly: Bool) -> Bool {
        let key = StateKey(kind: .node, id: id)
        guard let creation = entries.lastIndex(where: { $0.key == key && $0.rule?.effect == .create }) else { return false }
        var entry = entries[creation]
        switch entry.command {
        case "blockdev-add":
            entry.arguments["backing"] = backing
        case "blockdev-snapshot-sync":
            guard case .string(let file)? = entry.arguments["snapshot-file"] else { return false }
            var arguments = JSONObject(["driver": .string("qcow2"), "node-name": .string(id),
                                        "file": .object(JSONObject(["driver": .string("file"), "filename": .string(file)]))])
            arguments["backing"] = backing
            if readOnly { arguments["read-only"] = .bool(true) }
            entry = StateEntry(command: "blockdev-add", arguments: arguments)
        default:
            return false
        }
        entries[creation] = entry
        drop(entries.indices.filter { $0 > creation && entries[$0].command == "blockdev-snapshot" && entries[$0].key == key })
        return true
    }
}
