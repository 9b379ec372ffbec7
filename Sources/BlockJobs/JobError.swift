/// A refused job command, with QEMU's text (QMP GenericError).
public struct JobError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }

    static let notFound = JobError("Job not found")

    static func verbRefused(id: String, status: JobStatus, verb: JobVerb) -> JobError {
        JobError("Job '\(id)' in state '\(status.rawValue)' cannot accept command verb '\(verb.rawValue)'")
    }

    /// A transition outside the state machine: a bug in a job driver, reported rather than
    /// left to corrupt the job (QEMU asserts).
    static func illegalTransition(id: String, from: JobStatus, to: JobStatus) -> JobError {
        JobError("Job '\(id)' cannot go from state '\(from.rawValue)' to '\(to.rawValue)'")
    }
}
