import Glibc

/// What one allocation round does for one request: the piece planned for it (the request's
/// bytes from `formatDone`, at most to the end of one L2 table), the L2 entries to write
/// once the round's data is durable, and the result to hand back.
struct Qcow2AllocPlan {
    var request: UnsafeMutablePointer<BlockRequest>
    /// Bytes of the request done by this piece, or -errno (0: metadata refused, EIO).
    var result: Int64 = 0
    var l1Index: UInt64
    /// The entries the piece spans (checked against the round's other plans).
    var spanFirst: UInt64
    var spanCount: UInt64
    /// The L2 table the entries go to (a new one if `tableAt >= 0`).
    var tableOffset: UInt64 = 0
    /// Arena offset of the new table built this round (-1: none).
    var tableAt = -1
    /// Entries to write after the round's fdatasync: `count` from index `first`, at arena
    /// offset `entriesAt` (big-endian, as on disk). count 0: nothing to write.
    var first: UInt64 = 0
    var count: UInt64 = 0
    var entriesAt = 0

    init(request: UnsafeMutablePointer<BlockRequest>, l1Index: UInt64, spanFirst: UInt64, spanCount: UInt64) {
        self.request = request
        self.l1Index = l1Index
        self.spanFirst = spanFirst
        self.spanCount = spanCount
    }
}

/// Host bytes that lose a reference once the round's new entries are durable: a replaced
/// compressed cluster's bytes, or a discarded data cluster (`punch`: give its space back to
/// the file system once free). `plan`: whose failure a failed refcount update becomes.
struct Qcow2AllocRelease {
    var hostOffset: UInt64
    var byteCount: UInt64
    var punch: Bool
    var plan: Int
}

/// One allocation round's state, kept by the allocator and reused round after round (its
/// arrays keep their capacity and the arena only grows: after the first rounds nothing is
/// allocated per request). Used only under the allocator's lock.
final class Qcow2AllocRound {
    /// Requests planned per round at most (the rest wait for the next one).
    static let maximumPlans = 64
    /// New L2 tables per round at most (bounds the arena: each takes a cluster).
    static let maximumNewTables = 4

    var plans: [Qcow2AllocPlan] = []
    var releases: [Qcow2AllocRelease] = []
    /// Entries read and changed, and new tables, of the round's plans.
    private(set) var arena: UnsafeMutableRawPointer
    private var arenaCapacity: Int
    private var arenaUsed = 0
    /// Something written this round must be durable before the entries pointing at it.
    var needsSync = false
    var newTables = 0

    init?(clusterSize: Int) {
        arenaCapacity = max(clusterSize * 2, 64 * 1024)
        guard let arena = malloc(arenaCapacity) else { return nil }
        self.arena = arena
        plans.reserveCapacity(Self.maximumPlans)
        releases.reserveCapacity(Self.maximumPlans)
    }

    deinit { free(arena) }

    func reset() {
        plans.removeAll(keepingCapacity: true)
        releases.removeAll(keepingCapacity: true)
        arenaUsed = 0
        needsSync = false
        newTables = 0
    }

    /// `bytes` of the arena (8-byte aligned), as an offset: pointers into the arena are good
    /// only until the next `reserve`. nil if the arena cannot grow.
    func reserve(_ bytes: Int) -> Int? {
        let at = (arenaUsed + 7) & ~7
        if at + bytes > arenaCapacity {
            let capacity = max(arenaCapacity * 2, at + bytes)
            guard let grown = realloc(arena, capacity) else { return nil }
            arena = grown
            arenaCapacity = capacity
        }
        arenaUsed = at + bytes
        return at
    }

    /// Whether a piece spanning `count` entries from `first` of table `l1Index` must wait
    /// for the next round: an earlier plan of this round changes some of those entries (or
    /// makes that table), which the piece must see first.
    func conflicts(l1Index: UInt64, first: UInt64, count: UInt64) -> Bool {
        for plan in plans where plan.l1Index == l1Index {
            if plan.tableAt >= 0 || Qcow2AllocBatching.overlaps(first, count, plan.spanFirst, plan.spanCount) { return true }
        }
        return false
    }
}
