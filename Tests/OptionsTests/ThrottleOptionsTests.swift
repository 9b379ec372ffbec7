import BlockCommon
import SpindleOptions
import Testing

@Suite struct ThrottleOptionsTests {
    static let group = ["--object", "throttle-group,id=tg0,x-iops-total=5000"]

    @Test func throttleGroupFlatAndLimitsForms() throws {
        let config = try configuration(["--object", "throttle-group,id=tg0,x-iops-total=5000,x-iops-total-max=8000,x-iops-total-max-length=3,x-iops-size=8192",
                                        "--object", "throttle-group,id=tg1,limits.bps-read=20000000,limits.bps-write=1000000",
                                        "--object", #"{"qom-type":"throttle-group","id":"tg2","limits":{"iops-total":5000,"bps-total-max":100,"bps-total":50}}"#])
        var first = ThrottleLimits()
        first[.iopsTotal] = ThrottleBucketLimit(average: 5000, max: 8000, maxLength: 3)
        first.iopsSize = 8192
        var second = ThrottleLimits()
        second[.bpsRead].average = 20_000_000
        second[.bpsWrite].average = 1_000_000
        var third = ThrottleLimits()
        third[.iopsTotal].average = 5000
        third[.bpsTotal] = ThrottleBucketLimit(average: 50, max: 100)
        #expect(config.throttleGroups == [ThrottleGroupOptions(id: "tg0", limits: first), ThrottleGroupOptions(id: "tg1", limits: second),
                                          ThrottleGroupOptions(id: "tg2", limits: third)])
        #expect(config.iothreads.isEmpty)
    }

    @Test func sameValueInBothSpellingsIsAccepted() throws {
        let config = try configuration(["--object", "throttle-group,id=tg0,x-iops-total=10,limits.iops-total=10"])
        #expect(config.throttleGroups.first?.limits[.iopsTotal].average == 10)
    }

    /// util/throttle.c's checks, with QEMU's words.
    @Test func limitsAreValidatedAsQEMUDoes() {
        expectError(["--object", "throttle-group,id=tg0,x-iops-total=10,x-iops-read=5"],
                    "--object id=tg0: bps/iops/max total values and read/write values cannot be used at the same time")
        expectError(["--object", "throttle-group,id=tg0,x-bps-total-max=10,x-bps-write-max=5,x-bps-total=1,x-bps-write=1"], "cannot be used at the same time")
        expectError(["--object", "throttle-group,id=tg0,x-iops-size=4096"], "iops size requires an iops value to be set")
        expectError(["--object", "throttle-group,id=tg0,x-bps-total=1000000000000001"], "bps/iops/max values must be within [0, 1000000000000000]")
        expectError(["--object", "throttle-group,id=tg0,x-iops-total=10,x-iops-total-max=20,x-iops-total-max-length=0"], "the burst length cannot be 0")
        expectError(["--object", "throttle-group,id=tg0,x-iops-total=10,x-iops-total-max-length=5"], "burst length set without burst rate")
        expectError(["--object", "throttle-group,id=tg0,x-iops-total-max=20"], "bps_max/iops_max require corresponding bps/iops values")
        expectError(["--object", "throttle-group,id=tg0,x-iops-total=20,x-iops-total-max=10"], "bps_max/iops_max cannot be lower than bps/iops")
        expectError(["--object", "throttle-group,id=tg0,x-bps-total=10,x-bps-total-max=1000000000,x-bps-total-max-length=10000000"],
                    "burst length too high for this burst rate")
        expectError(["--object", "throttle-group,id=tg0,x-iops-total=-5"], "invalid number '-5' for 'x-iops-total'")
        expectError(["--object", "throttle-group,id=tg0,x-iops-total=10,limits.iops-total=20"], "'limits.iops-total' and 'x-iops-total' differ")
        expectError(["--object", "throttle-group,id=tg0,x-iops=10"], "unknown key 'x-iops' (throttle-group takes:")
        expectError(["--object", "throttle-group"], "missing required key 'id'")
        expectError(Self.group + ["--object", "iothread,id=tg0"], "object id 'tg0' is already used")
    }

    @Test func throttleNodeOverAnEarlierNodeInAnEarlierGroup() throws {
        let config = try configuration(Self.group + nullNode + ["--blockdev", "driver=throttle,node-name=t0,throttle-group=tg0,file=n0"]
                                       + exportArgs(node: "t0"))
        #expect(config.blockdevs.last == BlockdevOptions(nodeName: NodeName("t0"), driver: .throttle(ThrottleFilterOptions(child: NodeName("n0"), group: "tg0"))))
        let json = try configuration(Self.group + nullNode + ["--blockdev", #"{"driver":"throttle","node-name":"t0","throttle-group":"tg0","file":"n0"}"#])
        #expect(json.blockdevs.last == config.blockdevs.last)
    }

    @Test func throttleNodeErrors() {
        expectError(nullNode + ["--blockdev", "driver=throttle,node-name=t0,throttle-group=tg0,file=n0"],
                    "--blockdev node-name=t0: throttle group 'tg0' does not exist (define it with an earlier --object throttle-group,id=tg0)")
        expectError(Self.group + ["--blockdev", "driver=throttle,node-name=t0,throttle-group=tg0,file=n0"], "node 'n0' does not exist")
        expectError(Self.group + nullNode + ["--blockdev", "driver=throttle,node-name=t0,file=n0"], "missing required key 'throttle-group'")
        expectError(Self.group + nullNode + ["--blockdev", "driver=throttle,node-name=t0,throttle-group=tg0,file=t0"], "cannot filter itself")
        expectError(Self.group + nullNode + ["--blockdev", "driver=throttle,node-name=t0,throttle-group=tg0,file=n0,limits.iops-total=5"],
                    "unknown key 'limits.iops-total' (driver throttle takes:")
    }

    @Test func objectAddAndQomSetJSON() throws {
        let object = try objectOptions(fromJSONObject: OptionObject([
            "qom-type": .string("throttle-group"), "id": .string("tg0"),
            "limits": .object(OptionObject(["iops-total": .number("5000")])),
        ]))
        var limits = ThrottleLimits()
        limits[.iopsTotal].average = 5000
        #expect(object == .throttleGroup(ThrottleGroupOptions(id: "tg0", limits: limits)))
        // qom-set replaces the members it names and keeps the others.
        let changed = try throttleLimits(fromJSONObject: OptionObject(["bps-total": .number("20000000")]), over: limits)
        #expect(changed[.iopsTotal].average == 5000 && changed[.bpsTotal].average == 20_000_000)
        #expect(throws: CommandLineError.self) {
            try throttleLimits(fromJSONObject: OptionObject(["iops-read": .number("1")]), over: limits)
        }
        #expect(throws: CommandLineError.self) { try throttleLimits(fromJSONObject: OptionObject(["iops": .number("1")])) }
    }
}
