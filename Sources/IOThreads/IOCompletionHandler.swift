/// Something an IOThread delivers completions to: a virtqueue, a kick watcher. It runs on
/// that IOThread only, and is registered there (see `IOThread.register`).
public protocol IOCompletionHandler: AnyObject {
    /// One CQE whose token named this handler. `tag` is the handler's own low 48 bits.
    func handleCompletion(tag: UInt64, result: Int32, flags: UInt32)
    /// Called once after a batch of CQEs, if the handler asked with `scheduleEndOfBatch`
    /// (e.g. to publish used-ring entries and signal the guest once per batch).
    func endOfBatch()
    /// Called on the thread's next turn of its loop, if the handler asked with
    /// `scheduleNextTurn` (to continue work it stopped, after the thread has submitted what
    /// is queued and reaped what completed).
    func nextTurn()
}

extension IOCompletionHandler {
    public func nextTurn() {}
}
