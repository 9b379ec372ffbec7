/// A placer that could not be set up.
public struct PlacementError: Error, Equatable, Sendable, CustomStringConvertible {
    public let problem: String

    public init(_ problem: String) { self.problem = problem }

    public var description: String { problem }
}
