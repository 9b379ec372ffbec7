import CSpindle

/// The packed-ring layout of a queue's inflight region (vhost-user.rst, "Inflight I/O
/// tracking"): a 32-byte header `{features u64, version u16, desc_num u16, free_head u16,
/// old_free_head u16, used_idx u16, old_used_idx u16, used_wrap_counter u8,
/// old_used_wrap_counter u8, padding[7]}` (the state array starts 8-aligned), then `desc_num`
/// 32-byte states `{inflight u8, padding u8, next u16, last u16, num u16, counter u64, id u16,
/// flags u16, len u32, addr u64}`.
public enum PackedInflightLayout {
    public static let headerBytes = 32
    public static let descriptorStateBytes = 32

    enum Header {
        static let version = 8
        static let descNum = 10
        static let freeHead = 12
        static let oldFreeHead = 14
        static let usedIdx = 16
        static let oldUsedIdx = 18
        static let usedWrap = 20
        static let oldUsedWrap = 21
    }

    enum State {
        static let inflight = 0
        static let next = 2
        static let last = 4
        static let num = 6
        static let counter = 8
        static let id = 16
        static let flags = 18
        static let len = 20
        static let addr = 24
    }
}

/// One packed queue's region of the inflight buffer, kept up to date on the queue's IOThread
/// so that a backend process started after this one dies finishes exactly the requests this
/// one took and never completed, and writes its next used descriptor where this one stopped
/// (QEMU cannot say: after a backend crash it sends back a stale packed vring base).
///
/// The region's entries form a free list. Taking a buffer copies its ring descriptors into
/// entries from the free list (the ring slots get overwritten by used descriptors of other
/// buffers while it is in flight), then marks the head entry (counter, inflight = 1), then
/// moves `free_head` and `old_free_head` past it. Publishing a batch puts the batch's entries
/// back on the free list and moves `used_idx`/`used_wrap_counter` (region) before the batch's
/// first used flags are stored (ring), then clears the batch's marks, then sets the `old_*`
/// fields. Recovery (`init`, in `+Recovery`) decides from the ring whether a batch caught
/// half way was published, rolls forward or back, and resubmits in counter order.
///
/// The free list's links live here (authoritative) and are mirrored into the region; nothing
/// on the hot path reads the region back.
public final class PackedInflightTracker: @unchecked Sendable {
    let buffer: InflightBuffer  // keeps the mapping alive
    let region: UnsafeMutableRawPointer
    let size: UInt16
    var counter: UInt64 = 1
    var freeHead: UInt16
    var freeCount: Int
    /// `size` entries each: the free list's next links, each head entry's last entry and
    /// descriptor count, and each in-flight buffer id's head entry (`none` when not tracked).
    let links: PackedInflightLinks
    /// Buffer ids a previous backend process took and never completed, oldest first.
    let resubmitList: [UInt16]
    var resubmitNext = 0

    /// Requests found in flight when the queue started (resubmitted before any new one).
    public var recoveredCount: Int { resubmitList.count }
    /// Of those, the ones not yet taken again.
    public var pendingResubmissions: Int { resubmitList.count - resubmitNext }

    init(buffer: InflightBuffer, region: UnsafeMutableRawPointer, size: UInt16, links: PackedInflightLinks,
         freeHead: UInt16, freeCount: Int, counter: UInt64, resubmitList: [UInt16]) {
        self.buffer = buffer
        self.region = region
        self.size = size
        self.links = links
        self.freeHead = freeHead
        self.freeCount = freeCount
        self.counter = counter
        self.resubmitList = resubmitList
    }

    // MARK: on the IOThread

    /// The next buffer id to work on: resubmissions first, then the ring (copied into the
    /// region and marked as taken).
    @inline(__always)
    public func nextID(from ring: inout PackedVirtqueue) throws(VirtqueueError) -> UInt16? {
        if resubmitNext < resubmitList.count {
            let id = resubmitList[resubmitNext]
            resubmitNext += 1
            return id
        }
        guard let id = try ring.popAvailable() else { return nil }
        try track(id: id, ring: &ring)
        return id
    }

    /// `nextID(from:)` with the buffer walked into `chain`: a resubmission from its copy, a
    /// new buffer in the ring's one walk (`takeAvailable(into:)`). `.tooManySpans` leaves
    /// the region and the ring as they were: the same buffer comes next again.
    @inline(__always)
    public func nextID(from ring: inout PackedVirtqueue, into chain: DescriptorChain) throws(VirtqueueError) -> UInt16? {
        if resubmitNext < resubmitList.count {
            let id = resubmitList[resubmitNext]
            try ring.walkBuffer(id: id, into: chain)
            resubmitNext += 1  // after the walk: one that ran out of spans is walked again
            return id
        }
        guard let id = try ring.takeAvailable(into: chain) else { return nil }
        try track(id: id, ring: &ring)
        return id
    }

    /// Copies buffer `id`'s ring descriptors into free entries and marks its head in flight.
    private func track(id: UInt16, ring: inout PackedVirtqueue) throws(VirtqueueError) {
        let entry = ring.buffers[Int(id)]
        let count = Int(entry >> 16)
        guard count <= freeCount else {
            ring.markBroken()
            throw .descriptorsInFlightExceedRing(queueSize: size)
        }
        let head = freeHead
        var cursor = head
        var last = head
        var position = Int(entry & 0xffff)
        for _ in 0..<count {
            let source = UnsafeRawPointer(ring.descriptors + 16 * position)
            let state = Self.state(region, cursor)
            state.storeBytes(of: source.loadUnaligned(as: UInt64.self), toByteOffset: PackedInflightLayout.State.addr, as: UInt64.self)
            state.storeBytes(of: source.loadUnaligned(fromByteOffset: 8, as: UInt32.self), toByteOffset: PackedInflightLayout.State.len, as: UInt32.self)
            state.storeBytes(of: source.loadUnaligned(fromByteOffset: 12, as: UInt32.self), toByteOffset: PackedInflightLayout.State.id, as: UInt32.self)
            last = cursor
            cursor = links.next[Int(cursor)]
            position += 1
            if position == Int(size) { position = 0 }
        }
        let headState = Self.state(region, head)
        headState.storeBytes(of: UInt16(count).littleEndian, toByteOffset: PackedInflightLayout.State.num, as: UInt16.self)
        headState.storeBytes(of: last.littleEndian, toByteOffset: PackedInflightLayout.State.last, as: UInt16.self)
        headState.storeBytes(of: counter.littleEndian, toByteOffset: PackedInflightLayout.State.counter, as: UInt64.self)
        spindle_fence_release()
        headState.storeBytes(of: 1, toByteOffset: PackedInflightLayout.State.inflight, as: UInt8.self)
        spindle_fence_release()
        Self.store16(region, PackedInflightLayout.Header.freeHead, cursor)
        Self.store16(region, PackedInflightLayout.Header.oldFreeHead, cursor)
        counter &+= 1
        freeHead = cursor
        freeCount -= count
        links.last[Int(head)] = last
        links.count[Int(head)] = UInt16(count)
        links.headOfID[Int(id)] = head
    }

    /// `ring.publishUsed()` with the region updated around it, in the spec's order.
    @inline(__always)
    public func publishUsed(_ ring: inout PackedVirtqueue) {
        let batch = ring.batchIDCount
        guard batch > 0 else { return ring.publishUsed() }
        let none = PackedInflightLinks.none
        for k in 0..<batch {
            let id = ring.batchIDs[k]
            let head = links.headOfID[Int(id)]
            guard head != none else { continue }  // a hostile driver's repeated id
            let last = links.last[Int(head)]
            links.next[Int(last)] = freeHead
            Self.store16(Self.state(region, last), PackedInflightLayout.State.next, freeHead)
            freeHead = head
            freeCount += Int(links.count[Int(head)])
        }
        Self.store16(region, PackedInflightLayout.Header.freeHead, freeHead)
        Self.store16(region, PackedInflightLayout.Header.usedIdx, ring.usedPosition)
        region.storeBytes(of: ring.usedWrap ? 1 : 0, toByteOffset: PackedInflightLayout.Header.usedWrap, as: UInt8.self)
        spindle_fence_release()
        ring.publishUsed()
        spindle_fence_release()
        for k in 0..<batch {
            let id = ring.batchIDs[k]  // still there: publishing only reset the count
            let head = links.headOfID[Int(id)]
            guard head != none else { continue }
            Self.state(region, head).storeBytes(of: 0, toByteOffset: PackedInflightLayout.State.inflight, as: UInt8.self)
            links.headOfID[Int(id)] = none
        }
        spindle_fence_release()
        Self.store16(region, PackedInflightLayout.Header.oldFreeHead, freeHead)
        Self.store16(region, PackedInflightLayout.Header.oldUsedIdx, ring.usedPosition)
        region.storeBytes(of: ring.usedWrap ? 1 : 0, toByteOffset: PackedInflightLayout.Header.oldUsedWrap, as: UInt8.self)
    }

    // MARK: layout

    @inline(__always)
    static func state(_ region: UnsafeMutableRawPointer, _ entry: UInt16) -> UnsafeMutableRawPointer {
        region + PackedInflightLayout.headerBytes + PackedInflightLayout.descriptorStateBytes * Int(entry)
    }

    @inline(__always)
    static func load16(_ pointer: UnsafeMutableRawPointer, _ offset: Int) -> UInt16 {
        UInt16(littleEndian: pointer.load(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    static func store16(_ pointer: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        pointer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
    }
}

/// The tracker's own bookkeeping, `size` entries per table, in one allocation.
final class PackedInflightLinks: @unchecked Sendable {
    static let none: UInt16 = .max
    let next: UnsafeMutablePointer<UInt16>
    let last: UnsafeMutablePointer<UInt16>
    let count: UnsafeMutablePointer<UInt16>
    let headOfID: UnsafeMutablePointer<UInt16>
    private let storage: UnsafeMutablePointer<UInt16>

    init(size: Int) {
        storage = .allocate(capacity: 4 * size)
        storage.initialize(repeating: 0, count: 3 * size)
        (storage + 3 * size).initialize(repeating: Self.none, count: size)
        next = storage
        last = storage + size
        count = storage + 2 * size
        headOfID = storage + 3 * size
    }

    deinit { storage.deallocate() }
}
