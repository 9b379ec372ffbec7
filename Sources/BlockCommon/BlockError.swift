/// An error from the block layer, carrying the errno-style cause and a message for an operator.
public struct BlockError: Error, CustomStringConvertible, Sendable, Equatable {
    public var errno: Int32
    public var message: String

    public init(errno: Int32, _ message: String) {
        self.errno = errno
        self.message = message
    }

    public var description: String { message }
}
