import BlockCommon
import ControlThread
import SpindleOptions

/// blockdev-reopen {"options": [ {the full blockdev-add options of a node}, ... ]} (QEMU
/// 7.2): each entry is read as blockdev-add reads its arguments; the target changes what
/// differs, or refuses naming the option (BlockGraph+ReopenOptions.swift).
@ControlActor
struct BlockdevReopenCommands {
    let target: any MonitorCommandTarget

    func blockdevReopen(_ raw: JSONObject) async throws(QMPError) -> JSONValue {
        guard let value = raw["options"] else { throw CommandArguments.missing("options") }
        guard case .array(let list) = value else { throw QMPError("Invalid parameter type for 'options', expected: array") }
        var parsed: [BlockdevOptions] = []
        var objects: [JSONObject] = []
        for (index, element) in list.enumerated() {
            guard case .object(let object) = element else {
                throw QMPError("Invalid parameter type for 'options[\(index)]', expected: object")
            }
            guard object["node-name"] != nil else { throw QMPError("node-name not specified") }
            guard case .string? = object["driver"] else { throw CommandArguments.missing("options[\(index)].driver") }
            do {
                parsed.append(try blockdevOptions(fromJSONObject: object))
            } catch {
                throw QMPError(error.message)
            }
            objects.append(object)
        }
        for entry in raw.entries where entry.key != "options" { throw QMPError("Parameter '\(entry.key)' is unexpected") }
        try await target.blockdevReopen(parsed, arguments: objects)
        return .emptyObject
    }
}

extension MonitorCommandTarget {
    /// blockdev-reopen (targets without it refuse).
    public func blockdevReopen(_ options: [BlockdevOptions], arguments: [JSONObject]) async throws(QMPError) {
        throw QMPError(.commandNotFound, "The command blockdev-reopen has not been found")
    }
}
