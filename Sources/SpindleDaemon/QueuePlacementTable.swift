/// One virtqueue of one export.
struct QueueKey: Hashable, Sendable, CustomStringConvertible {
    let export: String
    let queue: Int

    /// "export/queue", as query-iothreads and object-del show it.
    var description: String { "\(export)/\(queue)" }
}

/// Which IOThread serves each running virtqueue: one entry per queue, changed only by
/// `started`, `stopped` and `moved`, so query-iothreads, object-del and the CPU placer all
/// read the same answer. Control thread only (the daemon owns one).
struct QueuePlacementTable: Sendable {
    /// Where one queue runs.
    struct Placement: Sendable, Equatable {
        /// The serving IOThread's id.
        let thread: String
        /// The CPU the automatic placer counted this queue against, if it chose the thread;
        /// given back to the placer when the queue stops there.
        let automaticCPU: Int?
    }

    private var placements: [QueueKey: Placement] = [:]

    /// The queue started on `thread`. A queue runs on one thread at a time: an entry left
    /// from before is replaced (and returned, so its CPU can be given back).
    @discardableResult
    mutating func started(_ key: QueueKey, on thread: String, automaticCPU: Int? = nil) -> Placement? {
        placements.updateValue(Placement(thread: thread, automaticCPU: automaticCPU), forKey: key)
    }

    /// The queue stopped on `thread`. Returns the placement removed, or nil for a stale stop
    /// (the queue is not recorded on that thread: it was moved or stopped already).
    mutating func stopped(_ key: QueueKey, on thread: String) -> Placement? {
        guard let placement = placements[key], placement.thread == thread else { return nil }
        placements[key] = nil
        return placement
    }

    /// The queue now runs on `thread` (x-queue-move restarted it there). Returns the placement
    /// it replaced, if the old thread's stop was not recorded yet.
    @discardableResult
    mutating func moved(_ key: QueueKey, to thread: String) -> Placement? {
        started(key, on: thread)
    }

    /// The placement of `key`, nil if it does not run.
    func placement(of key: QueueKey) -> Placement? {
        placements[key]
    }

    /// The queues `thread` serves, as "export/queue" sorted as text (query-iothreads' order).
    func queueNames(servedBy thread: String) -> [String] {
        placements.compactMap { $0.value.thread == thread ? $0.key.description : nil }.sorted()
    }

    /// The queues `thread` serves, unsorted (the metrics endpoint labels them one by one).
    func keys(servedBy thread: String) -> [QueueKey] {
        placements.compactMap { $0.value.thread == thread ? $0.key : nil }
    }
}
