/// Something an IOThread may busy-poll instead of sleeping (a virtqueue's avail index), so a
/// busy guest is served without kicks and wakeups. Runs on the IOThread only.
public protocol IOPoller: AnyObject {
    /// Looks for new work and handles it; true if it found some.
    func pollForWork() -> Bool
    /// The thread starts spinning: stop asking the guest for notifications.
    func pollingBegins()
    /// The thread is about to sleep: ask for notifications again. True if work arrived in
    /// between (the thread then keeps going instead of sleeping).
    func pollingEnds() -> Bool
    /// Requests taken from this poller wait on the kernel (their I/O has not completed).
    var hasRequestsInFlight: Bool { get }
}

/// QEMU's adaptive polling window: it grows while sleeps are short (work comes back soon
/// after the window ends) and shrinks when sleeps outlast the maximum.
public struct PollWindow: Sendable, Equatable {
    public let maxNs: UInt64
    public let grow: UInt64
    public let shrink: UInt64
    public private(set) var currentNs: UInt64 = 0
    /// Where a window starts growing from.
    public static let initialNs: UInt64 = 4_000

    public init(maxNs: UInt64, grow: UInt64 = 0, shrink: UInt64 = 0) {
        self.maxNs = maxNs
        self.grow = grow == 0 ? 2 : grow
        self.shrink = shrink
    }

    /// Updates the window after a sleep of `blockedNs`.
    public mutating func record(blockedNs: UInt64) {
        guard maxNs > 0 else { currentNs = 0; return }
        if blockedNs <= currentNs {
            return  // the window was long enough
        } else if blockedNs > maxNs {
            currentNs = shrink == 0 ? 0 : currentNs / shrink
        } else if currentNs < maxNs {
            currentNs = currentNs == 0 ? Self.initialNs : min(maxNs, currentNs.multipliedReportingOverflow(by: grow).partialValue)
        }
    }
}
