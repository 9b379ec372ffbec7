import BlockCommon
import SpindleOptions
import Testing

@Suite struct ExportTests {
    @Test func keyvalAllKeys() throws {
        let config = try configuration(["--object", "iothread,id=iot0"] + nullNode + ["--export",
            "vhost-user-blk,id=exp0,node-name=n0,addr.type=unix,addr.path=/run/exp0.sock,writable=on,writethrough=on,num-queues=4,logical-block-size=4k,serial=SN,,1,iothread=iot0,fixed-iothread=off"])
        var expected = VhostUserBlkExportOptions(id: "exp0", nodeName: NodeName("n0"), socketPath: "/run/exp0.sock")
        expected.writable = true
        expected.writethrough = true
        expected.numQueues = 4
        expected.logicalBlockSize = 4096
        expected.serial = "SN,1"
        expected.iothread = "iot0"
        #expect(config.exports == [expected])
    }

    @Test func defaults() throws {
        let config = try configuration(nullNode + exportArgs())
        #expect(config.exports == [VhostUserBlkExportOptions(id: "exp0", nodeName: NodeName("n0"), socketPath: "/tmp/exp0.sock")])
        #expect(config.exports.first?.numQueues == 16)  // QEMU's default of one queue per vCPU must fit
        #expect(config.exports.first?.logicalBlockSize == 512)
        #expect(config.exports.first?.writable == false)
    }

    @Test func json() throws {
        let config = try configuration(nullNode + ["--export",
            #"{"type":"vhost-user-blk","id":"exp0","node-name":"n0","addr":{"type":"unix","path":"/tmp/exp0.sock"},"writable":true,"num-queues":2,"logical-block-size":4096,"serial":"abc"}"#])
        var expected = VhostUserBlkExportOptions(id: "exp0", nodeName: NodeName("n0"), socketPath: "/tmp/exp0.sock")
        expected.writable = true
        expected.numQueues = 2
        expected.logicalBlockSize = 4096
        expected.serial = "abc"
        #expect(config.exports == [expected])
    }

    @Test func missingKeys() {
        expectError(nullNode + ["--export", "vhost-user-blk,id=exp0,node-name=n0,addr.type=unix"],
                    "--export id=exp0: missing required key 'addr.path'")
        expectError(nullNode + ["--export", "vhost-user-blk,id=exp0,node-name=n0"], "missing required key 'addr.path'", "addr.type=unix")
        expectError(nullNode + ["--export", "vhost-user-blk,id=exp0,node-name=n0,addr.path=/x"], "missing required key 'addr.type'")
        expectError(nullNode + ["--export", "vhost-user-blk,node-name=n0,addr.type=unix,addr.path=/x"], "--export: missing required key 'id'")
        expectError(nullNode + ["--export", "vhost-user-blk,id=e,addr.type=unix,addr.path=/x"], "missing required key 'node-name'")
        expectError(nullNode + ["--export", "id=e,node-name=n0"], "missing required key 'type'")
    }

    @Test func unsupportedTypesAndAddresses() {
        expectError(nullNode + ["--export", "nbd,id=e,node-name=n0"], "export type 'nbd' is not supported")
        expectError(nullNode + ["--export", "foo,id=e,node-name=n0"], "invalid value 'foo' for 'type'")
        expectError(nullNode + ["--export", "vhost-user-blk,id=e,node-name=n0,addr.type=fd,addr.str=3"],
                    "addr.type=fd is not supported")
        expectError(nullNode + ["--export", "vhost-user-blk,id=e,node-name=n0,addr.type=inet,addr.path=x"],
                    "invalid value 'inet' for 'addr.type'")
        expectError(nullNode + exportArgs(",bogus=1"), "--export id=exp0: unknown key 'bogus' (type vhost-user-blk takes:")
        expectError(nullNode + ["--export", "vhost-user-blk,id=e,node-name=n0,addr=x"], "'addr' must be an object")
    }

    @Test func numbersOutOfRange() {
        expectError(nullNode + exportArgs(",num-queues=0"), "'num-queues' must be from 1 to 16, not 0")
        expectError(nullNode + exportArgs(",num-queues=17"), "'num-queues' must be from 1 to 16, not 17")
        expectError(nullNode + exportArgs(",num-queues=-1"), "invalid number '-1' for 'num-queues'")
        expectError(nullNode + exportArgs(",num-queues=two"), "invalid number 'two'")
        expectError(nullNode + exportArgs(",num-queues=99999999999999999999999"), "invalid number")
        expectError(nullNode + exportArgs(",logical-block-size=256"), "invalid logical-block-size 256", "power of two")
        expectError(nullNode + exportArgs(",logical-block-size=1000"), "invalid logical-block-size 1000")
        expectError(nullNode + exportArgs(",logical-block-size=4M"), "invalid logical-block-size 4194304")
        expectError(nullNode + exportArgs(",logical-block-size=0"), "invalid logical-block-size 0")
        expectError(nullNode + exportArgs(",serial=123456789012345678901"), "serial '123456789012345678901' is too long")
        expectError(nullNode + exportArgs(",writable=2"), "invalid boolean '2' for 'writable'")
    }

    @Test func acceptedBoundaries() throws {
        _ = try configuration(nullNode + exportArgs(",num-queues=16,logical-block-size=2M,serial=12345678901234567890"))
        _ = try configuration(nullNode + exportArgs(",num-queues=0x1,logical-block-size=512"))
        let config = try configuration(nullNode + exportArgs(",serial="))
        #expect(config.exports.first?.serial == nil)
    }

    @Test func jsonWrongTypes() {
        let start = #"{"type":"vhost-user-blk","id":"e","node-name":"n0","addr":{"type":"unix","path":"/x"}"#
        expectError(nullNode + ["--export", start + #","num-queues":"2"}"#], "'num-queues' must be a number, not a string")
        expectError(nullNode + ["--export", start + #","num-queues":2.0}"#], "'num-queues' must be a whole number")
        expectError(nullNode + ["--export", start + #","writable":"on"}"#], "'writable' must be a boolean")
        expectError(nullNode + ["--export", #"{"type":"vhost-user-blk","id":"e","node-name":"n0","addr":"/x"}"#], "'addr' must be an object")
        expectError(nullNode + ["--export", #"{"type":"vhost-user-blk","id":"e","node-name":"n0","addr":{}}"#], "missing required key 'addr.type'")
    }

    @Test func crossReferences() {
        expectError(nullNode + exportArgs(node: "disk9"),
                    "--export id=exp0: node 'disk9' does not exist (define it with --blockdev first)")
        expectError(exportArgs() + nullNode, "node 'n0' does not exist")
        expectError(nullNode + exportArgs() + exportArgs(path: "/tmp/other.sock"), "export id 'exp0' is already used")
        expectError(nullNode + exportArgs() + exportArgs(id: "exp1"), "socket path '/tmp/exp0.sock' is already used by export 'exp0'")
        expectError(["--blockdev", "null-co,node-name=n0,read-only=on"] + exportArgs(",writable=on"),
                    "--export id=exp0: node 'n0' is read-only", "writable=on")
        expectError(nullNode + exportArgs(",iothread=iot0"), "iothread 'iot0' does not exist", "--object iothread,id=iot0")
        expectError(nullNode + exportArgs(",iothread=iot0") + ["--object", "iothread,id=iot0"], "iothread 'iot0' does not exist")
    }

    @Test func readOnlyNodeCanBeExportedReadOnly() throws {
        let config = try configuration(["--blockdev", "null-co,node-name=n0,read-only=on"] + exportArgs())
        #expect(config.exports.count == 1)
    }

    @Test func idsAndPaths() {
        expectError(nullNode + exportArgs(id: "0e"), "invalid id '0e'")
        expectError(nullNode + exportArgs(path: ""), "'addr.path' must not be empty")
        expectError(nullNode + exportArgs(path: "/" + String(repeating: "s", count: 107)), "too long")
    }
}
