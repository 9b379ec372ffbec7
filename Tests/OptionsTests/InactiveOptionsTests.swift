import BlockCommon
import SpindleOptions
import Testing

/// QEMU 10's keys for handing an image over: blockdev `active`, export `allow-inactive`.
@Suite struct InactiveOptionsTests {
    @Test func activeDefaultsOnAndTakesOffOnEveryDriver() throws {
        let config = try configuration([
            "--blockdev", "file,node-name=f0,filename=disk.img",
            "--blockdev", "file,node-name=f1,filename=disk.img,active=off",
            "--blockdev", "null-co,node-name=n0,active=off",
            "--blockdev", "x-delay,node-name=d0,file=f1,active=off",
        ])
        #expect(config.blockdevs.map(\.active) == [true, false, false, false])
        let qmp = try blockdevOptions(fromJSONObject: OptionObject([
            "driver": .string("file"), "node-name": .string("f2"), "filename": .string("disk.img"), "active": .bool(false),
        ]))
        #expect(!qmp.active)
        expectError(["--blockdev", "null-co,node-name=n0,active=later"], "invalid boolean 'later' for 'active'")
    }

    @Test func allowInactiveDefaultsOff() throws {
        #expect(try configuration(nullNode + exportArgs()).exports.first?.allowInactive == false)
        #expect(try configuration(nullNode + exportArgs(",allow-inactive=on")).exports.first?.allowInactive == true)
        let qmp = try exportOptions(fromJSONObject: OptionObject([
            "type": .string("vhost-user-blk"), "id": .string("e0"), "node-name": .string("n0"), "allow-inactive": .bool(true),
            "addr": .object(OptionObject(["type": .string("unix"), "path": .string("/tmp/e0.sock")])),
        ]))
        #expect(qmp.allowInactive)
        expectError(nullNode + exportArgs(",allow-inactive=1"), "invalid boolean '1' for 'allow-inactive'")
    }

    @Test func helpNamesTheKeys() {
        for key in ["active=on|off", "allow-inactive=on|off", "blockdev-set-active"] {
            #expect(spindleHelpText.contains(key), "help lacks \(key)")
        }
    }
}
