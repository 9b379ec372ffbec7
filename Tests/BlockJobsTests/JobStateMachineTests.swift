import BlockJobs
import Testing

/// QEMU's tables, spelled as QEMU's job.c has them (rows: from / verb; columns U C R P Y S W D X E N),
/// so the sets in JobStateMachine are checked cell by cell against an independent transcription.
private let columns: [JobStatus] = [.undefined, .created, .running, .paused, .ready, .standby, .waiting, .pending, .aborting, .concluded, .null]
private let transitionRows: [JobStatus: String] = [
    .undefined: "01000000000", .created: "00100000101", .running: "00011010100", .paused: "00100000000",
    .ready: "00000110100", .standby: "00001000000", .waiting: "00000001100", .pending: "00000000110",
    .aborting: "00000000110", .concluded: "00000000001", .null: "00000000000",
]
private let verbRows: [JobVerb: String] = [
    .cancel: "01111111000", .pause: "01111100000", .resume: "01111100000", .setSpeed: "01111100000",
    .complete: "00001100000", .finalize: "00000001000", .dismiss: "00000000010", .change: "01111100000",
]

@Suite struct JobStateMachineTests {
    @Test func everyTransitionMatchesQEMUsTable() {
        for from in JobStatus.allCases {
            for (index, to) in columns.enumerated() {
                let legal = Array(transitionRows[from]!)[index] == "1"
                #expect(JobStateMachine.canTransition(from: from, to: to) == legal, "\(from) -> \(to)")
            }
        }
    }

    @Test func everyVerbMatchesQEMUsTable() {
        for verb in JobVerb.allCases {
            for (index, status) in columns.enumerated() {
                let legal = Array(verbRows[verb]!)[index] == "1"
                #expect(JobStateMachine.accepts(verb, in: status) == legal, "\(verb) in \(status)")
            }
        }
    }
}
