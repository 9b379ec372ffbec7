/// Why the host topology could not be loaded. The description names the file at fault.
public struct TopologyError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file (or folder) the problem was found in.
    public let file: String
    public let problem: String

    public init(file: String, problem: String) {
        self.file = file
        self.problem = problem
    }

    public var description: String { "\(file): \(problem)" }
}
