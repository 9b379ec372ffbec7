/// An IOThread's pollers, walked on every spin of its poll loop without reference counting:
/// a walk over a Swift array of existentials retained the buffer and each poller around
/// every call (callgrind: ~2.3 retain/release pairs per request at QD 1, the calls being
/// opaque). The boxes own the pollers; the walk reads unretained references to them from
/// preallocated storage and borrows each box's immutable `poller`.
///
/// Thread-confined to its IOThread. Pollers added or removed during a walk (by a poller's
/// own call) take effect once it ends, as with the array the walk used to copy.
final class PollerList {
    private final class Box {
        let poller: any IOPoller
        init(_ poller: any IOPoller) { self.poller = poller }
    }

    /// Owners, in the order pollers were added.
    private var boxes: [Box] = []
    /// Unretained mirror of `boxes`, what the walks read.
    private let refs: UnsafeMutablePointer<Unmanaged<Box>>
    private let capacity: Int
    private(set) var count = 0
    private var walking = false
    private var changesAfterWalk: [(poller: any IOPoller, adds: Bool)] = []
    private let what: String

    init(capacity: Int, what: String) {
        self.capacity = capacity
        self.what = what
        refs = .allocate(capacity: capacity)
    }

    deinit {
        refs.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    func add(_ poller: any IOPoller) {
        if walking { changesAfterWalk.append((poller, true)); return }
        precondition(count < capacity, "\(what): more than \(capacity) pollers")
        let box = Box(poller)
        boxes.append(box)
        refs[count] = .passUnretained(box)
        count += 1
    }

    func remove(_ poller: any IOPoller) {
        if walking { changesAfterWalk.append((poller, false)); return }
        boxes.removeAll { $0.poller === poller }
        count = boxes.count
        for (i, box) in boxes.enumerated() { refs[i] = .passUnretained(box) }
    }

    /// Calls `body` with each poller, in the order they were added.
    @inline(__always)
    func forEach(_ body: (any IOPoller) -> Void) {
        walking = true
        var i = 0
        while i < count {
            refs[i]._withUnsafeGuaranteedRef { body($0.poller) }
            i += 1
        }
        walking = false
        if !changesAfterWalk.isEmpty { applyChangesAfterWalk() }
    }

    @inline(never)
    private func applyChangesAfterWalk() {
        let changes = changesAfterWalk
        changesAfterWalk.removeAll()
        for change in changes {
            if change.adds { add(change.poller) } else { remove(change.poller) }
        }
    }
}
