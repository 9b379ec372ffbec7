import Glibc

/// Lending the thread's span blocks (`SpanBlockPool`) to requests with long descriptor
/// chains, and waking the handlers that waited for one. On the IOThread only.
extension IOThread {
    /// Unused blocks kept when a queue stops (the rest are freed): enough for the next long
    /// requests without holding the high-water mark of every queue the thread served.
    public static let spanBlocksKeptIdle = 4

    /// A block for a long chain, or nil when all are lent out: then `waiter` gets a
    /// `nextTurn` once a block comes back (it must ask again; another may have taken it).
    public func takeSpanBlock(waiter: HandlerID) -> UnsafeMutablePointer<iovec>? {
        assertOnThread()
        if let block = spanBlocks.take() { return block }
        spanBlockWaiters.add(waiter.index)
        return nil
    }

    /// Gives back a block and wakes every handler waiting for one.
    public func giveSpanBlock(_ block: UnsafeMutablePointer<iovec>) {
        assertOnThread()
        spanBlocks.give(block)
        if spanBlockWaiters.count > 0 {
            spanBlockWaiters.callEach(includingAdded: false) { nextTurns.add($0) }
        }
    }

    /// Frees the unused blocks beyond `spanBlocksKeptIdle` (a queue stopped).
    public func trimSpanBlocks() {
        assertOnThread()
        spanBlocks.trim(keeping: Self.spanBlocksKeptIdle)
    }
}
