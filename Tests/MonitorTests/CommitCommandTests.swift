import BlockCommon
import ControlThread
import SpindleTestSupport
import Testing
@testable import Monitor

/// The fake daemon records what block-commit hands it.
extension FakeCommandTarget {
    func blockCommit(_ request: CommitRequest) async throws(QMPError) {
        calls.append("blockCommit \(request.jobID) \(request.device) top-node=\(request.topNode ?? "-") top=\(request.top ?? "-") "
            + "base-node=\(request.baseNode ?? "-") base=\(request.base ?? "-") backing-file=\(request.backingFile ?? "-") "
            + "speed=\(request.speed) finalize=\(request.autoFinalize) dismiss=\(request.autoDismiss)")
    }
}

/// block-commit's and block-job-complete's arguments: what reaches the daemon, and QEMU's
/// texts for the checks the monitor makes itself.
@Suite(.serialized) struct CommitCommandTests {
    static func error(_ desc: String) -> String { #"{"error": {"class": "GenericError", "desc": "\#(desc)"}}"# }

    @Test func argumentsReachTheDaemonAndConflictsAreRefusedWithQemusTexts() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        let cases: [(String, String)] = [
            (#"{"execute": "block-commit", "arguments": {"job-id": "c0", "device": "exp0"}}"#, #"{"return": {}}"#),
            (#"{"execute": "block-commit", "arguments": {"job-id": "c1", "device": "top", "top-node": "mid", "base": "/b.qcow2", "backing-file": "b.qcow2", "speed": 1048576, "auto-finalize": false, "auto-dismiss": false, "on-error": "report"}}"#,
             #"{"return": {}}"#),
            (#"{"execute": "block-commit", "arguments": {"device": "top"}}"#, #"{"return": {}}"#),
            (#"{"execute": "block-commit", "arguments": {"job-id": "c", "device": "top", "top-node": "a", "top": "/a"}}"#,
             Self.error("'top-node' and 'top' are mutually exclusive")),
            (#"{"execute": "block-commit", "arguments": {"job-id": "c", "device": "top", "base-node": "a", "base": "/a"}}"#,
             Self.error("'base-node' and 'base' are mutually exclusive")),
            (#"{"execute": "block-commit", "arguments": {"job-id": "c", "device": "top", "speed": -1}}"#,
             Self.error("Parameter 'speed' expects a non-negative value")),
            (#"{"execute": "block-commit", "arguments": {"job-id": "c", "device": "top", "on-error": "stop"}}"#,
             Self.error("on-error=stop is not supported by Spindle; errors always end the job (report)")),
            (#"{"execute": "block-commit", "arguments": {"job-id": "c", "device": "top", "filter-node-name": "f"}}"#,
             Self.error("'filter-node-name' is not supported by Spindle; its commit filter has no node name")),
            (#"{"execute": "block-commit", "arguments": {"job-id": "c"}}"#, Self.error("Parameter 'device' is missing")),
            (#"{"execute": "block-job-complete", "arguments": {"device": "c0"}}"#, #"{"return": {}}"#),
            (#"{"execute": "block-job-complete", "arguments": {"id": "c0"}}"#, Self.error("Parameter 'device' is missing")),
        ]
        for (request, reply) in cases {
            #expect(try client.command(request) == reply, "\(request)")
        }
        #expect(await fixture.target.calls == [
            "blockCommit c0 exp0 top-node=- top=- base-node=- base=- backing-file=- speed=0 finalize=true dismiss=true",
            "blockCommit c1 top top-node=mid top=- base-node=- base=/b.qcow2 backing-file=b.qcow2 speed=1048576 finalize=false dismiss=false",
            "blockCommit  top top-node=- top=- base-node=- base=- backing-file=- speed=0 finalize=true dismiss=true",
            "job-complete c0",
        ])
    }
}
