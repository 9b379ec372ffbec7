import Monitor
import SpindleOptions

/// One entry of the state file: a QMP command and its arguments, replayed at start-up exactly
/// as a client would send it.
struct StateEntry: Sendable, Equatable {
    var command: String
    var arguments: JSONObject

    /// How this entry is kept (nil: not a command the state file records).
    var rule: StateRecordingRule? { StateRecordingRule.table[command] }

    /// The object the entry is about, or nil for a command on every object of its kind
    /// (blockdev-set-active without node-name).
    var key: StateKey? {
        guard let rule else { return nil }
        if command == "blockdev-reopen" {
            // Recorded one node at a time (Daemon+Reopen.swift): the node its options name.
            guard case .array(let list)? = arguments["options"], list.count == 1, case .object(let options) = list[0],
                  case .string(let id)? = options["node-name"] else { return nil }
            return StateKey(kind: .node, id: id)
        }
        for name in rule.idArguments {
            guard case .string(let value)? = arguments[name] else { continue }
            // qom-set names its object by QOM path ("/objects/tg0"); the id is the last part.
            let id = rule.idIsPath ? String(value.split(separator: "/").last ?? Substring(value)) : value
            return StateKey(kind: rule.kind, id: id)
        }
        return nil
    }

    /// For a modification: what identifies the setting it changes, so a later one replaces it.
    var setting: [JSONValue?] {
        (rule?.settingArguments ?? []).map { arguments[$0] }
    }
}

enum StateObjectKind: String, Sendable {
    case node, export, object
}

/// A node, an export or a QOM object; ids of different kinds never collide.
struct StateKey: Hashable, Sendable, CustomStringConvertible {
    var kind: StateObjectKind
    var id: String
    var description: String { "\(kind.rawValue) '\(id)'" }
}

/// How the state file keeps one QMP command.
struct StateRecordingRule: Sendable {
    enum Effect: Sendable {
        /// Adds an object: appended.
        case create
        /// Removes an object: its entries go; a command-line object needs the entry itself.
        case remove
        /// Changes a setting of an object: replaces an earlier change of the same setting.
        case modify
    }
    var effect: Effect
    var kind: StateObjectKind
    /// The arguments that may name the object, first present wins.
    var idArguments: [String]
    /// The id argument is a QOM path (qom-set's "path").
    var idIsPath = false
    /// For `modify`: arguments that, besides the object, say which setting is changed.
    var settingArguments: [String] = []

    /// Every QMP command that changes what the daemon serves. Not recorded: queries,
    /// block_resize (the size is in the image), blockdev-mirror and job-* (a job is not
    /// configuration; its pivot is recorded when it happens), x-queue-move (it moves a running
    /// queue; after a restart queues are placed again when the frontend reconnects).
    /// block-export-revoke and HMP drive_del are recorded as block-export-del (the export is gone).
    static let table: [String: StateRecordingRule] = [
        "blockdev-add": .init(effect: .create, kind: .node, idArguments: ["node-name"]),
        "blockdev-del": .init(effect: .remove, kind: .node, idArguments: ["node-name"]),
        "blockdev-set-active": .init(effect: .modify, kind: .node, idArguments: ["node-name"]),
        "block-export-add": .init(effect: .create, kind: .export, idArguments: ["id"]),
        "block-export-del": .init(effect: .remove, kind: .export, idArguments: ["id"]),
        "object-add": .init(effect: .create, kind: .object, idArguments: ["id"]),
        "object-del": .init(effect: .remove, kind: .object, idArguments: ["id"]),
        "qom-set": .init(effect: .modify, kind: .object, idArguments: ["path"], idIsPath: true, settingArguments: ["property"]),
        "block_set_io_throttle": .init(effect: .modify, kind: .export, idArguments: ["id", "device"]),
        // A snapshot changes the overlay's backing (its export moves are recorded as pivots);
        // -sync also creates the overlay node (replayed with mode=existing: the file is there).
        "blockdev-snapshot": .init(effect: .modify, kind: .node, idArguments: ["overlay"]),
        "blockdev-snapshot-sync": .init(effect: .create, kind: .node, idArguments: ["snapshot-node-name"]),
        // One entry per node (its key: the node-name in "options"), made by the daemon.
        "blockdev-reopen": .init(effect: .modify, kind: .node, idArguments: []),
    ]
}

extension StateEntry {
    /// The entry to record for a command that succeeded, or nil if it changes nothing kept.
    static func recorded(command: String, arguments: JSONObject, result: JSONValue) -> StateEntry? {
        switch command {
        case "block-export-revoke":
            guard case .string(let id)? = arguments["id"] else { return nil }
            return .exportDeletion(id: id)
        case "human-monitor-command":
            // HMP reports failure in its text: only an empty reply is a drive_del that worked.
            guard result == .string(""), case .string(let line)? = arguments["command-line"] else { return nil }
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" })
            guard words.count == 2, words[0] == "drive_del" else { return nil }
            return .exportDeletion(id: String(words[1]))
        case "blockdev-reopen":
            return nil  // recorded per node by the daemon (Daemon+Reopen.swift)
        case "blockdev-snapshot-sync":
            var replayed = arguments
            replayed["mode"] = .string("existing")  // never create (overwrite) the overlay again
            return StateEntry(command: command, arguments: replayed)
        default:
            guard StateRecordingRule.table[command] != nil else { return nil }
            return StateEntry(command: command, arguments: arguments)
        }
    }

    static func exportDeletion(id: String) -> StateEntry {
        StateEntry(command: "block-export-del", arguments: JSONObject(["id": .string(id), "mode": .string("hard")]))
    }
}
