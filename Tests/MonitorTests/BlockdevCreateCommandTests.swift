import BlockCommon
import ControlThread
import SpindleTestSupport
import Testing
@testable import Monitor

/// The fake daemon records what blockdev-create and the snapshot commands hand it.
extension FakeCommandTarget {
    func blockdevCreate(jobID: String, options: BlockdevCreateOptions) throws(QMPError) {
        calls.append("blockdevCreate \(jobID) \(options)")
    }

    func blockdevSnapshot(node: String, overlay: String) async throws(QMPError) {
        calls.append("blockdevSnapshot \(node) \(overlay)")
    }

    func blockdevSnapshotSync(_ request: SnapshotSyncRequest) async throws(QMPError) {
        calls.append("blockdevSnapshotSync \(request.nodeName ?? "-") \(request.device ?? "-") \(request.snapshotFile) \(request.snapshotNodeName) existing=\(request.existing)")
    }
}

/// Argument checks of blockdev-create, blockdev-snapshot and blockdev-snapshot-sync: what
/// reaches the daemon, and QEMU's texts (members inside `options` named "options.x").
@Suite(.serialized) struct BlockdevCreateCommandTests {
    static func error(_ desc: String) -> String { #"{"error": {"class": "GenericError", "desc": "\#(desc)"}}"# }

    func expectReplies(_ client: QMPLineClient, _ cases: [(String, String)], sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (request, reply) in cases {
            #expect(try client.command(request) == reply, "\(request)", sourceLocation: sourceLocation)
        }
    }

    @Test func qcow2OptionsReachTheDaemonTyped() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "blockdev-create", "arguments": {"job-id": "c0", "options": {"driver": "qcow2", "file": "f", "size": 65536, "version": "v2", "cluster-size": 512, "refcount-bits": 16, "lazy-refcounts": false, "backing-file": "b.raw", "backing-fmt": "raw"}}}"#,
             #"{"return": {}}"#),
            (#"{"execute": "blockdev-create", "arguments": {"job-id": "c1", "options": {"driver": "qcow2", "file": {"driver": "file", "filename": "/i.qcow2"}, "size": 0}}}"#,
             #"{"return": {}}"#),
            (#"{"execute": "blockdev-create", "arguments": {"job-id": "c2", "options": {"driver": "file", "filename": "/i.raw", "size": 1024, "preallocation": "falloc"}}}"#,
             #"{"return": {}}"#),
        ])
        var first = BlockdevCreateQcow2(file: .node(NodeName("f")), size: 65536)
        first.version = 2
        first.clusterSize = 512
        first.refcountBits = 16
        first.lazyRefcounts = false
        first.backingFile = "b.raw"
        first.backingFormat = "raw"
        let inline = BlockdevCreateQcow2(file: .inline(FileOptions(filename: "/i.qcow2")), size: 0)
        let calls = await fixture.target.calls
        #expect(calls == [
            "blockdevCreate c0 \(BlockdevCreateOptions.qcow2(first))",
            "blockdevCreate c1 \(BlockdevCreateOptions.qcow2(inline))",
            "blockdevCreate c2 \(BlockdevCreateOptions.file(filename: "/i.raw", size: 1024, preallocation: .falloc))",
        ])
    }

    @Test func badMembersAreNamedInsideOptions() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        let create = #"{"execute": "blockdev-create", "arguments": {"job-id": "c0", "options": "#
        try expectReplies(client, [
            (create + #"{"driver": "qcow2", "file": "f", "size": "1G"}}}"#, Self.error("Invalid parameter type for 'options.size', expected: integer")),
            (create + #"{"driver": "qcow2", "file": "f", "size": -512}}}"#, Self.error("Invalid parameter type for 'options.size', expected: integer")),
            (create + #"{"driver": "qcow2", "file": 7, "size": 512}}}"#, Self.error("Invalid parameter type for 'options.file', expected: BlockdevRef")),
            (create + #"{"driver": "qcow2", "file": "f", "size": 512, "version": "v1"}}}"#, Self.error("Parameter 'options.version' does not accept value 'v1'")),
            (create + #"{"driver": "qcow2", "file": {"driver": "rbd", "image": "x"}, "size": 512}}}"#,
             Self.error("file: only an inline driver=file is supported by Spindle here (got 'rbd'); add the node with blockdev-add and give its node-name")),
            (create + #"{"driver": "file", "filename": "/x", "size": 512, "preallocation": "sparse"}}}"#, Self.error("Parameter 'options.preallocation' does not accept value 'sparse'")),
            (create + #"{"driver": "qcow2", "size": 512}}}"#, Self.error("Parameter 'options.file' is missing")),
            (create + #"[]}}"#, Self.error("Invalid parameter type for 'options', expected: object")),
            (#"{"execute": "blockdev-create", "arguments": {"job-id": "c0", "options": {"driver": "file", "filename": "/x", "size": 0}, "extra": 1}}"#,
             Self.error("Parameter 'extra' is unexpected")),
        ])
        #expect(await fixture.target.calls.isEmpty)
    }

    @Test func snapshotCommandsPassModeAndNames() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "blockdev-snapshot", "arguments": {"node": "base", "overlay": "ov"}}"#, #"{"return": {}}"#),
            (#"{"execute": "blockdev-snapshot", "arguments": {"node": "base"}}"#, Self.error("Parameter 'overlay' is missing")),
            (#"{"execute": "blockdev-snapshot-sync", "arguments": {"node-name": "base", "snapshot-file": "/s.qcow2", "snapshot-node-name": "s"}}"#, #"{"return": {}}"#),
            (#"{"execute": "blockdev-snapshot-sync", "arguments": {"device": "exp0", "snapshot-file": "/s.qcow2", "snapshot-node-name": "s", "mode": "existing", "format": "qcow2"}}"#, #"{"return": {}}"#),
            (#"{"execute": "blockdev-snapshot-sync", "arguments": {"snapshot-file": "/s.qcow2", "snapshot-node-name": "s"}}"#, Self.error("Cannot find device= nor node-name=")),
            (#"{"execute": "blockdev-snapshot-sync", "arguments": {"node-name": "base", "snapshot-file": "/s.qcow2", "snapshot-node-name": "s", "mode": "relative"}}"#,
             Self.error("Parameter 'mode' does not accept value 'relative'")),
        ])
        #expect(await fixture.target.calls == [
            "blockdevSnapshot base ov",
            "blockdevSnapshotSync base - /s.qcow2 s existing=false",
            "blockdevSnapshotSync - exp0 /s.qcow2 s existing=true",
        ])
    }
}
