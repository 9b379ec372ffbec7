/// A job's state, QEMU's JobStatus (the raw values are QMP's names).
public enum JobStatus: String, Sendable, CaseIterable {
    case undefined, created, running, paused, ready, standby, waiting, pending, aborting, concluded
    case null
}

/// What a monitor client can ask of a job, QEMU's JobVerb (raw values are its QMP names).
public enum JobVerb: String, Sendable, CaseIterable {
    case cancel, pause, resume
    case setSpeed = "set-speed"
    case complete, finalize, dismiss
    case change
}

/// The state machine: which status may follow which, and which verbs each status accepts.
/// Same tables as QEMU's job.c (JobSTT, JobVerbTable), written as sets.
public enum JobStateMachine {
    public static func allowedTransitions(from status: JobStatus) -> Set<JobStatus> {
        switch status {
        case .undefined: [.created]
        case .created: [.running, .aborting, .null]
        case .running: [.paused, .ready, .waiting, .aborting]
        case .paused: [.running]
        case .ready: [.standby, .waiting, .aborting]
        case .standby: [.ready]
        case .waiting: [.pending, .aborting]
        case .pending: [.aborting, .concluded]
        case .aborting: [.aborting, .concluded]
        case .concluded: [.null]
        case .null: []
        }
    }

    public static func canTransition(from: JobStatus, to: JobStatus) -> Bool {
        allowedTransitions(from: from).contains(to)
    }

    public static func acceptedVerbs(in status: JobStatus) -> Set<JobVerb> {
        switch status {
        case .created, .running, .paused: [.cancel, .pause, .resume, .setSpeed, .change]
        case .ready, .standby: [.cancel, .pause, .resume, .setSpeed, .complete, .change]
        case .waiting: [.cancel]
        case .pending: [.cancel, .finalize]
        case .concluded: [.dismiss]
        case .undefined, .aborting, .null: []
        }
    }

    public static func accepts(_ verb: JobVerb, in status: JobStatus) -> Bool {
        acceptedVerbs(in: status).contains(verb)
    }
}
