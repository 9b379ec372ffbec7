import BlockCommon
import ControlThread
@testable import Monitor
import SpindleTestSupport
import Testing

@Suite(.serialized) struct CommandTests {
    func expectReplies(_ client: QMPLineClient, _ cases: [(String, String)], sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (request, reply) in cases {
            #expect(try client.command(request) == reply, "\(request)", sourceLocation: sourceLocation)
        }
    }

    static func error(_ desc: String) -> String { #"{"error": {"class": "GenericError", "desc": "\#(desc)"}}"# }

    @Test func queryCommandsListsEveryCommand() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        guard case .object(let reply) = try { client.send(#"{"execute": "query-commands"}"# + "\n"); return try client.readJSON() }(),
              case .array(let commands)? = reply["return"] else { Issue.record("no list"); return }
        let names = commands.compactMap { command -> String? in
            guard case .object(let object) = command, case .string(let name)? = object["name"] else { return nil }
            return name
        }
        #expect(names == QMPCommandDispatcher.commandNames)
        #expect(names.contains("block-export-revoke") && names.contains("human-monitor-command"))
    }

    @Test func blockdevAdd() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "blockdev-add", "arguments": {"driver": "file", "node-name": "d1", "filename": "/img", "cache": {"direct": true}, "read-only": true}, "id": 1}"#,
             #"{"return": {}, "id": 1}"#),
            (#"{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n1", "size": 4096}}"#, #"{"return": {}}"#),
            (#"{"execute": "blockdev-add", "arguments": {}}"#, Self.error("Parameter 'driver' is missing")),
            (#"{"execute": "blockdev-add", "arguments": {"driver": 1}}"#, Self.error("Invalid parameter type for 'driver', expected: string")),
            (#"{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n2", "sizex": 1}}"#,
             Self.error("unknown key 'sizex' (driver null-co takes: node-name, size, read-zeroes, read-only, driver, auto-read-only, force-share, detect-zeroes, active)")),
            (#"{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n2", "size": "big"}}"#,
             Self.error("'size' must be a size in bytes, not a string")),
        ])
        let added = await fixture.target.addedBlockdevs
        #expect(added.count == 2)
        var file = FileOptions(filename: "/img")
        file.direct = true
        file.readOnly = true
        #expect(added.first == BlockdevOptions(nodeName: NodeName("d1"), driver: .file(file)))
        var null = NullOptions()
        null.size = 4096
        #expect(added.last == BlockdevOptions(nodeName: NodeName("n1"), driver: .null(null)))

        await fixture.setFailure(QMPError("Duplicate nodes with node-name='n1'"))
        try expectReplies(client, [
            (#"{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n1"}}"#, Self.error("Duplicate nodes with node-name='n1'")),
        ])
    }

    @Test func blockdevDel() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "blockdev-del", "arguments": {"node-name": "d1"}}"#, #"{"return": {}}"#),
            (#"{"execute": "blockdev-del", "arguments": {}}"#, Self.error("Parameter 'node-name' is missing")),
            (#"{"execute": "blockdev-del"}"#, Self.error("Parameter 'node-name' is missing")),
            (#"{"execute": "blockdev-del", "arguments": {"node-name": 5}}"#, Self.error("Invalid parameter type for 'node-name', expected: string")),
            (#"{"execute": "blockdev-del", "arguments": {"node-name": "d1", "force": true}}"#, Self.error("Parameter 'force' is unexpected")),
        ])
        #expect(await fixture.target.calls == ["blockdevDel d1"])
        await fixture.setFailure(QMPError("Node d1 is in use"))
        try expectReplies(client, [(#"{"execute": "blockdev-del", "arguments": {"node-name": "d1"}}"#, Self.error("Node d1 is in use"))])
    }

    @Test func blockdevSetActive() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "blockdev-set-active", "arguments": {"node-name": "d1", "active": false}}"#, #"{"return": {}}"#),
            (#"{"execute": "blockdev-set-active", "arguments": {"active": true}}"#, #"{"return": {}}"#),
            (#"{"execute": "blockdev-set-active", "arguments": {"node-name": "d1"}}"#, Self.error("Parameter 'active' is missing")),
            (#"{"execute": "blockdev-set-active", "arguments": {"active": "off"}}"#, Self.error("Invalid parameter type for 'active', expected: boolean")),
            (#"{"execute": "blockdev-set-active", "arguments": {"node-name": 1, "active": true}}"#, Self.error("Invalid parameter type for 'node-name', expected: string")),
            (#"{"execute": "blockdev-set-active", "arguments": {"active": true, "all": true}}"#, Self.error("Parameter 'all' is unexpected")),
        ])
        #expect(await fixture.target.calls == ["blockdevSetActive d1 false", "blockdevSetActive - true"])
        await fixture.setFailure(QMPError("Node has active parent node"))
        try expectReplies(client, [(#"{"execute": "blockdev-set-active", "arguments": {"node-name": "d1", "active": false}}"#,
                                    Self.error("Node has active parent node"))])
    }

    @Test func blockExportAdd() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "block-export-add", "arguments": {"type": "vhost-user-blk", "id": "e1", "node-name": "disk0", "addr": {"type": "unix", "path": "/tmp/e1.sock"}, "writable": true, "num-queues": 4, "logical-block-size": 4096, "serial": "S1", "iothread": "io0"}}"#,
             #"{"return": {}}"#),
            (#"{"execute": "block-export-add", "arguments": {"id": "e2", "node-name": "disk0"}}"#, Self.error("Parameter 'type' is missing")),
            (#"{"execute": "block-export-add", "arguments": {"type": "vhost-user-blk", "node-name": "disk0"}}"#, Self.error("Parameter 'id' is missing")),
            (#"{"execute": "block-export-add", "arguments": {"type": "vhost-user-blk", "id": "e2", "node-name": "disk0"}}"#, Self.error("Parameter 'addr' is missing")),
            (#"{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e2", "node-name": "disk0", "addr": {}}}"#,
             Self.error("export type 'nbd' is not supported (Spindle exports only type=vhost-user-blk)")),
            (#"{"execute": "block-export-add", "arguments": {"type": "vhost-user-blk", "id": "e2", "node-name": "disk0", "addr": {"type": "unix", "path": "/tmp/x"}, "num-queues": 0}}"#,
             Self.error("'num-queues' must be from 1 to 16, not 0")),
        ])
        let added = await fixture.target.addedExports
        var expected = VhostUserBlkExportOptions(id: "e1", nodeName: NodeName("disk0"), socketPath: "/tmp/e1.sock")
        expected.writable = true
        expected.numQueues = 4
        expected.logicalBlockSize = 4096
        expected.serial = "S1"
        expected.iothread = "io0"
        #expect(added == [expected])
    }

    @Test func blockExportDel() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "block-export-del", "arguments": {"id": "exp0"}}"#, #"{"return": {}}"#),
            (#"{"execute": "block-export-del", "arguments": {"id": "exp0", "mode": "hard"}}"#, #"{"return": {}}"#),
            (#"{"execute": "block-export-del", "arguments": {"id": "exp0", "mode": "foo"}}"#, Self.error("Parameter 'mode' does not accept value 'foo'")),
            (#"{"execute": "block-export-del", "arguments": {"id": "exp0", "mode": 5}}"#, Self.error("Invalid parameter type for 'mode', expected: string")),
            (#"{"execute": "block-export-del", "arguments": {"id": 5}}"#, Self.error("Invalid parameter type for 'id', expected: string")),
        ])
        #expect(await fixture.target.calls == ["blockExportDel exp0 safe", "blockExportDel exp0 hard"])
        await fixture.setFailure(QMPError("Export 'x' is not found"))
        try expectReplies(client, [(#"{"execute": "block-export-del", "arguments": {"id": "x"}}"#, Self.error("Export 'x' is not found"))])
    }

    @Test func blockResize() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "block_resize", "arguments": {"node-name": "disk0", "size": 2147483648}}"#, #"{"return": {"guest-notified": true}}"#),
            (#"{"execute": "block_resize", "arguments": {"device": "exp0", "size": 0}}"#, #"{"return": {"guest-notified": true}}"#),
            (#"{"execute": "block_resize", "arguments": {}}"#, Self.error("Parameter 'size' is missing")),
            (#"{"execute": "block_resize", "arguments": {"node-name": "disk0"}}"#, Self.error("Parameter 'size' is missing")),
            (#"{"execute": "block_resize", "arguments": {"size": "x"}}"#, Self.error("Invalid parameter type for 'size', expected: integer")),
            (#"{"execute": "block_resize", "arguments": {"node-name": "disk0", "size": 1.5}}"#, Self.error("Invalid parameter type for 'size', expected: integer")),
            (#"{"execute": "block_resize", "arguments": {"node-name": "disk0", "size": 9223372036854775808}}"#, Self.error("Invalid parameter type for 'size', expected: integer")),
            (#"{"execute": "block_resize", "arguments": {"node-name": "disk0", "size": -1}}"#, Self.error("Parameter 'size' expects a >0 size")),
            (#"{"execute": "block_resize", "arguments": {"node-name": null, "size": 5}}"#, Self.error("Invalid parameter type for 'node-name', expected: string")),
            (#"{"execute": "block_resize", "arguments": {"size": 1}}"#, Self.error("Cannot find device='' nor node-name=''")),
            (#"{"execute": "block_resize", "arguments": {"device": "exp0", "node-name": "disk0", "size": 1}}"#,
             Self.error("Parameters 'device' and 'node-name' are mutually exclusive (give one of them)")),
        ])
        let resizes = await fixture.target.resizes
        #expect(resizes.map(\.0) == [.nodeName("disk0"), .device("exp0")])
        #expect(resizes.map(\.1) == [1 << 31, 0])
    }

    @Test func revokeAndDriveDel() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        func hmp(_ line: String) -> String { #"{"execute": "human-monitor-command", "arguments": {"command-line": "\#(line)"}}"# }
        try expectReplies(client, [
            (#"{"execute": "block-export-revoke", "arguments": {"id": "exp0"}}"#, #"{"return": {}}"#),
            (#"{"execute": "block-export-revoke", "arguments": {}}"#, Self.error("Parameter 'id' is missing")),
            (hmp("drive_del exp0"), #"{"return": ""}"#),
            (hmp("  drive_del   exp0  "), #"{"return": ""}"#),
            (hmp(""), #"{"return": ""}"#),
            (hmp("drive_del"), #"{"return": "drive_del: block device name expected\r\nTry \"help drive_del\" for more information\r\n"}"#),
            (hmp("drive_del a b"), #"{"return": "drive_del: extraneous characters at the end of line\r\nTry \"help drive_del\" for more information\r\n"}"#),
            (hmp("info block"), #"{"return": "unknown command: 'info' (Spindle's human monitor supports only drive_del)\r\n"}"#),
            (#"{"execute": "human-monitor-command", "arguments": {}}"#, Self.error("Parameter 'command-line' is missing")),
            (#"{"execute": "human-monitor-command", "arguments": {"command-line": "drive_del exp0", "cpu-index": 0}}"#, #"{"return": ""}"#),
        ])
        #expect(await fixture.target.calls == ["revokeExport exp0", "revokeExport exp0", "revokeExport exp0", "revokeExport exp0"])
        await fixture.setFailure(QMPError(.deviceNotFound, "Device 'x' not found"))
        try expectReplies(client, [
            (hmp("drive_del x"), #"{"return": "Device 'x' not found\r\n"}"#),
            (#"{"execute": "block-export-revoke", "arguments": {"id": "x"}}"#, #"{"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}"#),
        ])
    }

    @Test func queries() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "query-block-exports"}"#,
             #"{"return": [{"id": "exp0", "type": "vhost-user-blk", "node-name": "disk0", "shutting-down": false, "x-memory-bytes": 0}]}"#),
            (#"{"execute": "query-named-block-nodes", "arguments": {"flat": true}}"#,
             #"{"return": [{"node-name": "disk0", "drv": "file", "file": "/images/disk0.img", "ro": false, "active": true, "encrypted": false, "detect_zeroes": "off", "backing_file_depth": 0, "image": {"virtual-size": 1073741824, "filename": "/images/disk0.img", "format": "file"}, "cache": {"writeback": true, "direct": true, "no-flush": false}, "write_threshold": 0, "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}]}"#),
            (#"{"execute": "query-iothreads"}"#,
             #"{"return": [{"id": "io0", "thread-id": 4242, "poll-max-ns": 0, "poll-grow": 0, "poll-shrink": 0, "aio-max-batch": 0, "queues": [], "poll-ns": 0, "poll-hits": 0, "poll-misses": 0, "sleeps": 0, "poll-yields": 0, "cpu": 3}]}"#),
            (#"{"execute": "query-iothreads", "arguments": {"x": 1}}"#, Self.error("Parameter 'x' is unexpected")),
            (#"{"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "io1", "poll-max-ns": 0}}"#, #"{"return": {}}"#),
            (#"{"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "m"}}"#,
             Self.error("unsupported object type 'memory-backend-ram' (Spindle supports iothread, throttle-group and secret, e.g. --object iothread,id=iot0)")),
            (#"{"execute": "object-add", "arguments": {"qom-type": "iothread"}}"#, Self.error("Parameter 'id' is missing")),
            (#"{"execute": "object-del", "arguments": {"id": "io1"}}"#, #"{"return": {}}"#),
        ])
        #expect(await fixture.target.calls == ["objectAdd io1 0", "objectDel io1"])
    }

    @Test func quitRepliesThenQuits() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        #expect(try client.command(#"{"execute": "quit", "id": 1}"#) == #"{"return": {}, "id": 1}"#)
        try await Task.sleep(for: .milliseconds(20))
        #expect(await fixture.target.quitCount == 1)
        #expect(try client.command(#"{"execute": "quit", "arguments": {"x": 1}}"#) == Self.error("Parameter 'x' is unexpected"))
        #expect(await fixture.target.quitCount == 1)
    }
}

extension QMPFixture {
    func setFailure(_ error: QMPError?) { target.failure = error }
}
