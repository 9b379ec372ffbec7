/// A handler's reservation of completion-queue entries did not fit its IOThread's ring
/// (see IOContext): the handler is refused at setup instead of overflowing the CQ later.
public struct CompletionQueueFull: Error, CustomStringConvertible, Sendable {
    public let iothread: String
    public let needed: Int
    public let free: Int
    public let capacity: Int

    public var description: String {
        "iothread '\(iothread)' has \(free) of its \(capacity) completion-queue entries free and this needs \(needed)"
    }
}

extension IOThread {
    /// Reserves `count` CQ entries on this thread's ring for a handler about to register
    /// (its most CQEs outstanding at once). Any thread.
    public func reserveCompletions(_ count: Int) throws(CompletionQueueFull) {
        guard context.reserveCompletions(count) else {
            throw CompletionQueueFull(iothread: id, needed: count, free: context.completionEntries - context.completionsReserved,
                                      capacity: context.completionEntries)
        }
    }

    /// Gives back a reservation once its handler has no CQE outstanding. Any thread.
    public func releaseCompletions(_ count: Int) {
        context.releaseCompletions(count)
    }
}
