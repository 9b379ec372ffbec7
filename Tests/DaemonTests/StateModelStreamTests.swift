import Monitor
import SpindleOptions
import Testing
@testable import SpindleDaemon

/// What the state model keeps after block-stream gave a node a new backing.
@Suite struct StateModelStreamTests {
    private func entry(_ command: String, _ pairs: KeyValuePairs<String, JSONValue>) -> StateEntry {
        StateEntry(command: command, arguments: JSONObject(pairs))
    }

    private func qcow2(_ name: String, backing: JSONValue?) -> StateEntry {
        var arguments = JSONObject(["driver": .string("qcow2"), "node-name": .string(name),
                                    "file": .object(JSONObject(["driver": .string("file"), "filename": .string("/i/\(name).qcow2")]))])
        arguments["backing"] = backing
        return StateEntry(command: "blockdev-add", arguments: arguments)
    }

    @Test func aBlockdevAddNodeGetsItsNewBackingAndItsSnapshotEntryGoes() {
        var model = StateModel()
        model.record(qcow2("base", backing: .null))
        model.record(qcow2("top", backing: .null))
        model.record(entry("blockdev-snapshot", ["node": .string("base"), "overlay": .string("top")]))
        let toNone = model.recordBackingChange(node: "top", backing: .null, readOnly: false)
        #expect(toNone)
        #expect(model.entries.map(\.command) == ["blockdev-add", "blockdev-add"])
        #expect(model.entries[1].arguments["backing"] == .null)
        let toBase = model.recordBackingChange(node: "top", backing: .string("base"), readOnly: false)
        #expect(toBase)
        #expect(model.entries[1].arguments["backing"] == .string("base"))
        let toHeader = model.recordBackingChange(node: "top", backing: nil, readOnly: false)  // the chain from its header
        #expect(toHeader)
        #expect(model.entries[1].arguments["backing"] == nil)
    }

    @Test func aSnapshotSyncOverlayBecomesTheBlockdevAddOfItsFileInPlace() {
        var model = StateModel()
        model.record(qcow2("top", backing: nil))
        model.record(entry("blockdev-snapshot-sync", ["node-name": .string("top"), "snapshot-file": .string("/i/snap.qcow2"),
                                                      "snapshot-node-name": .string("snap"), "mode": .string("existing")]))
        model.record(entry("block-export-add", ["type": .string("vhost-user-blk"), "id": .string("e0"), "node-name": .string("snap")]))
        let overlayRecorded = model.recordBackingChange(node: "snap", backing: .null, readOnly: true)
        #expect(overlayRecorded)
        #expect(model.entries.map(\.command) == ["blockdev-add", "blockdev-add", "block-export-add"])
        let overlay = model.entries[1].arguments
        #expect(overlay["node-name"] == .string("snap") && overlay["backing"] == .null && overlay["read-only"] == .bool(true))
        #expect(overlay["file"] == .object(JSONObject(["driver": .string("file"), "filename": .string("/i/snap.qcow2")])))
    }

    @Test func aCommandLineNodeIsLeftAlone() {
        var model = StateModel(commandLine: [StateKey(kind: .node, id: "top")])
        model.record(entry("blockdev-snapshot", ["node": .string("base"), "overlay": .string("top")]))
        let recorded = model.recordBackingChange(node: "top", backing: .null, readOnly: false)
        #expect(!recorded)
        #expect(model.entries.map(\.command) == ["blockdev-snapshot"])
    }
}
