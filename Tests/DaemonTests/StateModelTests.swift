import BlockCommon
import Monitor
import SpindleOptions
import Testing
@testable import SpindleDaemon

private func entry(_ command: String, _ pairs: KeyValuePairs<String, JSONValue>) -> StateEntry {
    StateEntry(command: command, arguments: JSONObject(pairs))
}

private func node(_ name: String) -> StateEntry {
    entry("blockdev-add", ["driver": .string("null-co"), "node-name": .string(name)])
}

private func export(_ id: String, on nodeName: String) -> StateEntry {
    entry("block-export-add", ["type": .string("vhost-user-blk"), "id": .string(id), "node-name": .string(nodeName),
                               "addr": .object(["type": .string("unix"), "path": .string("/run/\(id).sock")])])
}

/// The state model: which entries a sequence of succeeded QMP commands leaves, and the
/// file's text (checksum, refusal of damaged files).
@Suite struct StateModelTests {
    @Test func createdObjectsAreKeptInOrderAndADeletionRemovesTheirEntries() {
        var model = StateModel()
        model.record(entry("object-add", ["qom-type": .string("iothread"), "id": .string("io1")]))
        model.record(node("n1"))
        model.record(export("e1", on: "n1"))
        model.record(entry("blockdev-set-active", ["node-name": .string("n1"), "active": .bool(false)]))
        model.record(entry("blockdev-set-active", ["node-name": .string("n1"), "active": .bool(true)]))
        #expect(model.entries.map(\.command) == ["object-add", "blockdev-add", "block-export-add", "blockdev-set-active"])
        #expect(model.entries.last?.arguments["active"] == .bool(true))

        model.record(entry("block-export-del", ["id": .string("e1")]))
        model.record(entry("blockdev-del", ["node-name": .string("n1")]))
        model.record(entry("object-del", ["id": .string("io1")]))
        #expect(model.entries.isEmpty)
    }

    @Test func deletingACommandLineObjectIsRecordedAndSurvivesItsRecreation() {
        let commandLine: Set<StateKey> = [StateKey(kind: .node, id: "n0"), StateKey(kind: .export, id: "e0")]
        var model = StateModel(commandLine: commandLine)
        model.record(.recorded(command: "block-export-revoke", arguments: JSONObject(["id": .string("e0")]), result: .emptyObject)!)
        model.record(export("e0", on: "n0"))
        model.record(entry("block-export-del", ["id": .string("e0")]))
        #expect(model.entries == [.exportDeletion(id: "e0")])
        #expect(model.liveKeys(.export).isEmpty)
        #expect(model.liveKeys(.node) == [StateKey(kind: .node, id: "n0")])
    }

    @Test func hmpDriveDelIsRecordedOnlyWhenItWorked() {
        let worked = StateEntry.recorded(command: "human-monitor-command",
                                         arguments: JSONObject(["command-line": .string("drive_del e0")]), result: .string(""))
        let failed = StateEntry.recorded(command: "human-monitor-command",
                                         arguments: JSONObject(["command-line": .string("drive_del e0")]), result: .string("Device 'e0' not found\r\n"))
        #expect(worked == .exportDeletion(id: "e0"))
        #expect(failed == nil)
        #expect(StateEntry.recorded(command: "x-queue-move", arguments: JSONObject(), result: .emptyObject) == nil)
        #expect(StateEntry.recorded(command: "block_resize", arguments: JSONObject(), result: .emptyObject) == nil)
    }

    @Test func qomSetReplacesTheSameSettingOnlyAndGoesWithItsObject() {
        var model = StateModel()
        model.record(entry("object-add", ["qom-type": .string("throttle-group"), "id": .string("tg0")]))
        model.record(entry("qom-set", ["path": .string("/objects/tg0"), "property": .string("x-iops-total"), "value": .number("100")]))
        model.record(entry("qom-set", ["path": .string("tg0"), "property": .string("x-bps-total"), "value": .number("1")]))
        model.record(entry("qom-set", ["path": .string("/objects/tg0"), "property": .string("x-iops-total"), "value": .number("200")]))
        #expect(model.entries.map { $0.arguments["property"] } == [nil, .string("x-bps-total"), .string("x-iops-total")])
        #expect(model.entries.last?.arguments["value"] == .number("200"))
        model.record(entry("object-del", ["id": .string("tg0")]))
        #expect(model.entries.isEmpty)
    }

    @Test func aPivotNamesTheNewNodeAfterTheTargetsEntry() {
        var model = StateModel(commandLine: [StateKey(kind: .node, id: "n0"), StateKey(kind: .export, id: "e0")])
        model.record(node("src"))
        model.record(export("e1", on: "src"))
        model.record(entry("block_set_io_throttle", ["id": .string("e1"), "iops": .number("10")]))
        model.record(node("dst"))
        var moved = model.exportArguments(id: "e1")!
        moved["node-name"] = .string("dst")
        model.recordPivot(exportID: "e1", arguments: moved)
        #expect(model.entries.map(\.command) == ["blockdev-add", "blockdev-add", "block-export-add", "block_set_io_throttle"])
        #expect(model.exportNode(id: "e1") == "dst")

        // A command-line export is deleted and added again on its new node.
        model.recordPivot(exportID: "e0", arguments: export("e0", on: "dst").arguments)
        #expect(model.entries.suffix(2) == [.exportDeletion(id: "e0"), export("e0", on: "dst")])
        model.record(entry("block-export-del", ["id": .string("e0")]))
        #expect(model.entries.last == .exportDeletion(id: "e0"))
    }

    @Test func aCommandLineExportsArgumentsParseBackToTheSameOptions() throws {
        var options = VhostUserBlkExportOptions(id: "e0", nodeName: NodeName("n0"), socketPath: "/run/e0.sock")
        #expect(try SpindleOptions.exportOptions(fromJSONObject: options.qmpArguments) == options)
        options.writable = true
        options.writethrough = true
        options.numQueues = 4
        options.logicalBlockSize = 4096
        options.serial = "disk-0"
        options.inflightTracking = false
        options.allowInactive = true
        options.dirtyLogMarked = false
        options.packedRing = false
        options.iothreadMapping = [IOThreadVQMapping(iothread: "a", vqs: [0, 2]), IOThreadVQMapping(iothread: "b", vqs: [1, 3])]
        #expect(try SpindleOptions.exportOptions(fromJSONObject: options.qmpArguments) == options)
        options.iothreadMapping = []
        options.iothread = "a"
        #expect(try SpindleOptions.exportOptions(fromJSONObject: options.qmpArguments) == options)
    }

    @Test func theFileRoundTripsAndItsChecksumCoversEveryByte() throws {
        let entries = [node("n1"), export("e1", on: "n1")]
        let bytes = StateFileFormat.serialize(entries, generation: 7)
        #expect(try StateFileFormat.parse(bytes) == StateFileFormat.Contents(generation: 7, entries: entries))
        #expect(try StateFileFormat.parse(StateFileFormat.serialize([], generation: 1)).entries.isEmpty)
        // Stored as zlib's CRC-32 of the bytes before the checksum member.
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)

        var corrupt = bytes
        corrupt[40] ^= 0x01
        #expect(parseError(corrupt).contains("checksum does not match"))
        for length in [0, 10, bytes.count / 2, bytes.count - 1] {
            #expect(parseError(Array(bytes.prefix(length))).contains("truncated"))
        }
    }

    @Test func aFileWithAnUnrecordedCommandOrAnotherVersionIsRefused() {
        let unknown = StateFileFormat.serialize([entry("x-queue-move", ["id": .string("e0")])], generation: 1)
        #expect(parseError(unknown).contains("entry 0 (x-queue-move): not a command the state file records"))
        var text = String(decoding: StateFileFormat.serialize([], generation: 1), as: UTF8.self)
        text = text.replacing("\"spindle-state\": 1", with: "\"spindle-state\": 2")
        let body = Array(text.utf8.prefix(text.utf8.count - 23))
        let rewritten = body + Array(", \"crc32\": \"\(hex(CRC32.checksum(body)))\"}\n".utf8)
        #expect(parseError(rewritten).contains("format version 2"))
    }
}

private func parseError(_ bytes: [UInt8]) -> String {
    do {
        _ = try StateFileFormat.parse(bytes)
        return ""
    } catch {
        return error.description
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 8 - digits.count) + digits
}
