import BlockCommon
@testable import SpindleOptions
import Testing

/// The test hooks given as configuration: the x-delay filter node and the export's
/// x-inflight key, from keyval, JSON and the JSON entry points QMP uses.
@Suite struct TestHookOptionsTests {
    @Test func delayFilterFromKeyval() throws {
        let config = try configuration(nullNode + ["--blockdev",
            "driver=x-delay,node-name=d0,file=n0,hold-every=7,hold-ms=100,fail-every=3,fail-errno=ENOSPC"])
        var delay = DelayFilterOptions(child: NodeName("n0"))
        delay.holdEvery = 7
        delay.holdMilliseconds = 100
        delay.failEvery = 3
        delay.failErrno = 28  // ENOSPC
        #expect(config.blockdevs.last == BlockdevOptions(nodeName: NodeName("d0"), driver: .delay(delay)))
        #expect(config.blockdevs.last?.driver.driverName == "x-delay")
        #expect(config.blockdevs.last?.driver.childNodeNames == [NodeName("n0")])
    }

    @Test func delayFilterDefaultsHoldAndFailNothing() throws {
        let config = try configuration(nullNode + ["--blockdev", "x-delay,node-name=d0,file=n0"] + exportArgs(node: "d0"))
        let expected = DelayFilterOptions(child: NodeName("n0"))
        #expect(config.blockdevs.last?.driver == .delay(expected))
        #expect(expected.holdEvery == 0 && expected.failEvery == 0 && expected.holdMilliseconds == 50 && expected.failErrno == 5)
        #expect(config.exports.first?.nodeName == NodeName("d0"))
    }

    @Test func delayFilterFromJSONAndQMP() throws {
        let json = #"{"driver":"x-delay","node-name":"d0","file":"n0","hold-every":2,"hold-ms":5000}"#
        let config = try configuration(nullNode + ["--blockdev", json])
        var delay = DelayFilterOptions(child: NodeName("n0"))
        delay.holdEvery = 2
        delay.holdMilliseconds = 5000
        #expect(config.blockdevs.last?.driver == .delay(delay))
        let qmp = try blockdevOptions(fromJSONObject: OptionObject([
            "driver": .string("x-delay"), "node-name": .string("d0"), "file": .string("n0"),
            "fail-every": .number("4"), "fail-errno": .string("EIO"),
        ]))
        var failing = DelayFilterOptions(child: NodeName("n0"))
        failing.failEvery = 4
        #expect(qmp == BlockdevOptions(nodeName: NodeName("d0"), driver: .delay(failing)))
    }

    @Test func delayFilterErrors() {
        expectError(["--blockdev", "x-delay,node-name=d0,file=n0"], "node 'n0' does not exist", "earlier --blockdev")
        expectError(["--blockdev", "x-delay,node-name=d0"], "missing required key 'file'")
        expectError(nullNode + ["--blockdev", "x-delay,node-name=d0,file=n0,fail-errno=EWHATEVER"],
                    "invalid value 'EWHATEVER' for 'fail-errno'", "ENOSPC")
        expectError(nullNode + ["--blockdev", "x-delay,node-name=d0,file.driver=file,file.filename=x"],
                    "'file' must name an existing node")
        expectError(nullNode + ["--blockdev", "x-delay,node-name=d0,file=n0,size=1G"], "unknown key 'size'", "driver x-delay takes")
        expectError(nullNode + ["--blockdev", "x-delay,node-name=d0,file=n0,hold-every=-1"], "invalid number '-1' for 'hold-every'")
        expectError(nullNode + ["--blockdev", "x-delay,node-name=d0,file=n0,hold-ms=600001"], "'hold-ms' must be from 0 to 600000")
        expectError(["--blockdev", "x-delay,node-name=d0,file=d0"], "cannot filter itself")
    }

    @Test func writableExportOfAFilterOverAReadOnlyNodeIsRefused() {
        expectError(["--blockdev", "null-co,node-name=n0,read-only=on", "--blockdev", "x-delay,node-name=d0,file=n0"]
                    + exportArgs(",writable=on", node: "d0"), "node 'd0' is read-only")
    }

    @Test func inflightKey() throws {
        #expect(try configuration(nullNode + exportArgs()).exports.first?.inflightTracking == true)
        #expect(try configuration(nullNode + exportArgs(",x-inflight=off")).exports.first?.inflightTracking == false)
        let qmp = try exportOptions(fromJSONObject: OptionObject([
            "type": .string("vhost-user-blk"), "id": .string("e0"), "node-name": .string("n0"), "x-inflight": .bool(false),
            "addr": .object(OptionObject(["type": .string("unix"), "path": .string("/tmp/e0.sock")])),
        ]))
        #expect(qmp.inflightTracking == false)
        expectError(nullNode + exportArgs(",x-inflight=maybe"), "invalid boolean 'maybe' for 'x-inflight'")
    }

    @Test func dirtyLogKey() throws {
        #expect(try configuration(nullNode + exportArgs()).exports.first?.dirtyLogMarked == true)
        #expect(try configuration(nullNode + exportArgs(",x-dirty-log=marked")).exports.first?.dirtyLogMarked == true)
        #expect(try configuration(nullNode + exportArgs(",x-dirty-log=unmarked")).exports.first?.dirtyLogMarked == false)
        let qmp = try exportOptions(fromJSONObject: OptionObject([
            "type": .string("vhost-user-blk"), "id": .string("e0"), "node-name": .string("n0"), "x-dirty-log": .string("unmarked"),
            "addr": .object(OptionObject(["type": .string("unix"), "path": .string("/tmp/e0.sock")])),
        ]))
        #expect(qmp.dirtyLogMarked == false)
        expectError(nullNode + exportArgs(",x-dirty-log=off"), "invalid value 'off' for 'x-dirty-log' (use marked or unmarked)")
    }

    @Test func helpNamesTheTestHooks() {
        for key in DelayFilterParser.keys + ["x-delay", "x-inflight", "x-dirty-log"] {
            #expect(spindleHelpText.contains(key), "help lacks \(key)")
        }
    }
}
