import BlockCommon
import ControlThread
import SpindleOptions
import SpindleTestSupport
import Testing
@testable import Monitor

/// The fake daemon with I/O limits: one group, "tg0", whose limits start at iops-total=5000.
extension FakeCommandTarget: ThrottleCommandTarget {
    static let groupLimits: ThrottleLimits = {
        var limits = ThrottleLimits()
        limits[.iopsTotal].average = 5000
        return limits
    }()

    func throttleGroupAdd(_ options: ThrottleGroupOptions) throws(QMPError) {
        calls.append("throttleGroupAdd \(options.id) \(Self.summary(options.limits))")
    }

    func throttleGroupLimits(id: String) throws(QMPError) -> ThrottleLimits {
        guard id == "tg0" else { throw QMPError(.deviceNotFound, "Device '\(id)' not found") }
        return Self.groupLimits
    }

    func setThrottleGroupLimits(id: String, limits: ThrottleLimits) throws(QMPError) {
        calls.append("setThrottleGroupLimits \(id) \(Self.summary(limits))")
    }

    func setIOThrottle(_ request: IOThrottleRequest) async throws(QMPError) {
        calls.append("setIOThrottle \(request.device) \(request.group ?? "-") \(Self.summary(request.limits))")
    }

    /// The limits that are set, as "name=avg/max/length" words, and iops-size.
    static func summary(_ limits: ThrottleLimits) -> String {
        var words = ThrottleBucketKind.allCases.filter { limits[$0] != ThrottleBucketLimit() }.map { kind in
            "\(kind.name)=\(limits[kind].average)/\(limits[kind].max)/\(limits[kind].maxLength)"
        }
        if limits.iopsSize != 0 { words.append("iops-size=\(limits.iopsSize)") }
        return words.isEmpty ? "none" : words.joined(separator: ",")
    }
}

@Suite(.serialized) struct ThrottleCommandTests {
    static func error(_ desc: String, _ errorClass: String = "GenericError") -> String {
        #"{"error": {"class": "\#(errorClass)", "desc": "\#(desc)"}}"#
    }

    func expectReplies(_ client: QMPLineClient, _ cases: [(String, String)], sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (request, reply) in cases {
            #expect(try client.command(request) == reply, "\(request)", sourceLocation: sourceLocation)
        }
    }

    @Test func blockSetIOThrottleMapsQEMUsArguments() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        let zeros = #""bps": 0, "bps_rd": 0, "bps_wr": 0"#
        try expectReplies(client, [
            (#"{"execute": "block_set_io_throttle", "arguments": {"id": "exp0", \#(zeros), "iops": 100, "iops_rd": 0, "iops_wr": 0, "iops_max": 300, "iops_max_length": 4, "iops_size": 8192, "group": "g"}}"#,
             #"{"return": {}}"#),
            (#"{"execute": "block_set_io_throttle", "arguments": {"device": "exp0", "bps": 0, "bps_rd": 10, "bps_wr": 20, "iops": 0, "iops_rd": 0, "iops_wr": 0, "bps_wr_max": 40}}"#,
             #"{"return": {}}"#),
            (#"{"execute": "block_set_io_throttle", "arguments": {"id": "exp0", \#(zeros), "iops": 0, "iops_rd": 0, "iops_wr": 0}}"#, #"{"return": {}}"#),
            (#"{"execute": "block_set_io_throttle", "arguments": {"id": "exp0", \#(zeros), "iops": 0, "iops_rd": 0}}"#,
             Self.error("Parameter 'iops_wr' is missing")),
            (#"{"execute": "block_set_io_throttle", "arguments": {"id": "exp0", \#(zeros), "iops": "1", "iops_rd": 0, "iops_wr": 0}}"#,
             Self.error("Invalid parameter type for 'iops', expected: integer")),
            (#"{"execute": "block_set_io_throttle", "arguments": {"id": "exp0", \#(zeros), "iops": -1, "iops_rd": 0, "iops_wr": 0}}"#,
             Self.error("bps/iops/max values must be within [0, 1000000000000000]")),
            (#"{"execute": "block_set_io_throttle", "arguments": {"id": "exp0", \#(zeros), "iops": 1, "iops_rd": 0, "iops_wr": 0, "iops_max_length": 2}}"#,
             Self.error("burst length set without burst rate")),
            (#"{"execute": "block_set_io_throttle", "arguments": {\#(zeros), "iops": 1, "iops_rd": 0, "iops_wr": 0}}"#,
             Self.error("Need exactly one of 'device' and 'id' (the export id)")),
            (#"{"execute": "block_set_io_throttle", "arguments": {"id": "exp0", \#(zeros), "iops": 1, "iops_rd": 0, "iops_wr": 0, "colour": 1}}"#,
             Self.error("Parameter 'colour' is unexpected")),
        ])
        #expect(await fixture.target.calls == [
            "setIOThrottle exp0 g iops-total=100/300/4,iops-size=8192",
            "setIOThrottle exp0 - bps-read=10/0/1,bps-write=20/40/1",
            "setIOThrottle exp0 - none",
        ])
    }

    @Test func qomGetAndQomSetMergeTheGivenMembers() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        try expectReplies(client, [
            (#"{"execute": "qom-get", "arguments": {"path": "/objects/tg0", "property": "x-iops-total"}}"#, #"{"return": 5000}"#),
            (#"{"execute": "qom-set", "arguments": {"path": "tg0", "property": "limits", "value": {"bps-read": 1000}}}"#, #"{"return": {}}"#),
            (#"{"execute": "qom-set", "arguments": {"path": "tg0", "property": "x-iops-total-max", "value": 6000}}"#, #"{"return": {}}"#),
            (#"{"execute": "qom-set", "arguments": {"path": "tg0", "property": "limits", "value": {"iops-read": 5}}}"#,
             Self.error("bps/iops/max total values and read/write values cannot be used at the same time")),
            (#"{"execute": "qom-set", "arguments": {"path": "tg0", "property": "limits", "value": {"iops": 5}}}"#,
             Self.error("unknown key 'iops' (limits takes: bps-total, bps-total-max, bps-total-max-length, bps-read, bps-read-max, bps-read-max-length, bps-write, bps-write-max, bps-write-max-length, iops-total, iops-total-max, iops-total-max-length, iops-read, iops-read-max, iops-read-max-length, iops-write, iops-write-max, iops-write-max-length, iops-size)")),
            (#"{"execute": "qom-set", "arguments": {"path": "tg0", "property": "limits", "value": 5}}"#,
             Self.error("Invalid parameter type for 'value', expected: object")),
            (#"{"execute": "qom-set", "arguments": {"path": "tg0", "property": "limits"}}"#, Self.error("Parameter 'value' is missing")),
            (#"{"execute": "qom-get", "arguments": {"path": "tg9", "property": "limits"}}"#, Self.error("Device 'tg9' not found", "DeviceNotFound")),
            (#"{"execute": "qom-get", "arguments": {"path": "tg0", "property": "size"}}"#, Self.error("Property 'size' not found", "DeviceNotFound")),
            (#"{"execute": "object-add", "arguments": {"qom-type": "throttle-group", "id": "tg1", "limits": {"bps-total": 20000000}}}"#,
             #"{"return": {}}"#),
        ])
        #expect(await fixture.target.calls == [
            "setThrottleGroupLimits tg0 bps-read=1000/0/1,iops-total=5000/0/1",
            "setThrottleGroupLimits tg0 iops-total=5000/6000/1",
            "throttleGroupAdd tg1 bps-total=20000000/0/1",
        ])
        guard case .object(let reply) = try { client.send(#"{"execute": "qom-get", "arguments": {"path": "tg0", "property": "limits"}}"# + "\n"); return try client.readJSON() }(),
              case .object(let limits)? = reply["return"] else { Issue.record("no limits object"); return }
        #expect(limits.entries.map(\.key).count == 19)
        #expect(limits["iops-total"] == .number("5000") && limits["bps-read-max-length"] == .number("1"))
    }
}
