/// The monitor socket cannot be set up.
public struct QMPServerError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
