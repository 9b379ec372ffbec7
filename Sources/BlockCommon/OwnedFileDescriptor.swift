import Glibc

/// A file descriptor with exactly one owner: it is closed exactly once, by `close()` (which
/// consumes it) or, if never closed explicitly, when its owner lets it go. Others that
/// need the number (a data path, a lock call) borrow `rawValue` and never close it.
public struct OwnedFileDescriptor: ~Copyable {
    public let rawValue: Int32

    /// Takes ownership of an open descriptor (>= 0).
    public init(adopting rawValue: Int32) {
        precondition(rawValue >= 0, "adopting an invalid file descriptor \(rawValue)")
        self.rawValue = rawValue
    }

    /// Closes it now; returns close(2)'s result (0, or -1 with errno set).
    @discardableResult
    public consuming func close() -> Int32 {
        let fd = rawValue
        discard self
        return Glibc.close(fd)
    }

    deinit { _ = Glibc.close(rawValue) }
}
