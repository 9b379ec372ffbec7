/// Handler ids waiting for a call from their IOThread (at the end of a batch, or on the
/// loop's next turn): each listed at most once while it waits, in the order it asked.
/// Thread-confined, preallocated, and a class so that a handler called from `callEach` may
/// schedule again while the walk is under way.
final class HandlerSchedule {
    private let pending: UnsafeMutablePointer<Bool>
    private let list: UnsafeMutablePointer<UInt16>
    private let capacity: Int
    private let what: String
    private(set) var count = 0

    /// `listCapacity`: how many entries may be listed at once. A schedule walked with
    /// `callEach(includingAdded: false)` needs room for every handler twice (those added
    /// during the walk wait behind those it is calling).
    init(handlers: Int, listCapacity: Int, what: String) {
        capacity = listCapacity
        pending = .allocate(capacity: handlers)
        pending.initialize(repeating: false, count: handlers)
        list = .allocate(capacity: capacity)
        self.what = what
    }

    deinit {
        pending.deallocate()
        list.deallocate()
    }

    @inline(__always)
    func add(_ id: UInt16) {
        if pending[Int(id)] { return }
        // A handler that keeps scheduling itself during the walk is listed anew each time:
        // say so rather than write past the list.
        precondition(count < capacity, "\(what): a handler keeps rescheduling itself")
        pending[Int(id)] = true
        list[count] = id
        count += 1
    }

    /// Forgets a handler that is unregistered: its stale entry is skipped, even if the slot
    /// serves a new handler by the time the walk reaches it.
    func forget(_ id: UInt16) {
        pending[Int(id)] = false
    }

    /// Calls `body` for each listed id. With `includingAdded`, ids added during the walk
    /// are called in the same walk; without, they stay listed for the next one.
    func callEach(includingAdded: Bool, _ body: (UInt16) -> Void) {
        var i = 0
        let end = count
        while includingAdded ? i < count : i < end {
            let id = list[i]
            i += 1
            guard pending[Int(id)] else { continue }  // forgotten
            pending[Int(id)] = false
            body(id)
        }
        // Move what was added during a bounded walk to the front.
        let added = count - i
        for j in 0..<added { list[j] = list[i + j] }
        count = added
    }
}
