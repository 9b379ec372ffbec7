import CSpindle

/// One split queue's region of the inflight buffer, kept up to date on the queue's IOThread so
/// that a backend process started after this one dies can finish exactly the requests this
/// one took and never completed (vhost-user.rst, "Inflight I/O tracking").
///
/// The order of writes is what makes the region trustworthy after a SIGKILL at any point:
/// - a head is marked (counter, then inflight = 1) as soon as it is taken off the avail ring;
/// - before used.idx is published, `last_batch_head` names the batch's last head;
/// - after used.idx is published, the batch's heads are cleared, then the region's `used_idx`
///   catches up with used.idx.
/// A request is thus always either marked in flight or visible in the used ring. Recovery
/// (`init`) clears the marks of heads published after the region's `used_idx` (read back
/// from the used ring, so a whole batch is covered, not just its last head), resubmits the
/// rest in the order they were taken, and restarts the avail ring at used.idx + in flight.
public final class InflightTracker: @unchecked Sendable {
    private let buffer: InflightBuffer  // keeps the mapping alive
    private let region: UnsafeMutableRawPointer
    private let size: UInt16
    private var counter: UInt64 = 1
    /// The region's used_idx as last written.
    private var regionUsed: UInt16
    /// Heads a previous backend process took and never completed, oldest first.
    private let resubmitList: [UInt16]
    private var resubmitNext = 0

    /// Requests found in flight when the queue started (resubmitted before any new one).
    public var recoveredCount: Int { resubmitList.count }
    /// Of those, the ones not yet taken again.
    public var pendingResubmissions: Int { resubmitList.count - resubmitNext }

    /// Takes over queue `queue`'s region for `ring`. A fresh region (version 0) is initialised;
    /// one with content is recovered, and `ring.lastAvailableIndex` is set from it (the
    /// frontend's SET_VRING_BASE rewinds to used.idx after a backend crash, which would take
    /// completed requests again and skip unfinished ones whenever completions were out of order).
    public init(buffer: InflightBuffer, queue: Int, ring: inout SplitVirtqueue) throws(InflightError) {
        guard let region = buffer.queueRegion(queue) else {
            throw InflightError("the inflight buffer has no region for queue \(queue) (it covers \(buffer.queueCount))")
        }
        guard buffer.queueSize == Int(ring.size) else {
            throw InflightError("the inflight buffer is for queues of \(buffer.queueSize) entries, queue \(queue) has \(ring.size)")
        }
        self.buffer = buffer
        self.region = region
        size = ring.size
        let usedIndex = ring.usedIndex
        let version = Self.load16(region, Offset.version)
        if version == 0 {
            // Fresh buffer: nothing was ever in flight.
            (region + InflightLayout.headerBytes).initializeMemory(as: UInt8.self, repeating: 0,
                                                                   count: InflightLayout.descriptorStateBytes * Int(size))
            Self.store16(region, Offset.descNum, size)
            Self.store16(region, Offset.lastBatchHead, 0)
            Self.store16(region, Offset.usedIdx, usedIndex)
            Self.store16(region, Offset.version, InflightLayout.version)
            regionUsed = usedIndex
            resubmitList = []
            return
        }
        guard version == InflightLayout.version else {
            throw InflightError("queue \(queue): inflight region version \(version) is not \(InflightLayout.version)")
        }
        let descNum = Self.load16(region, Offset.descNum)
        guard descNum == size else {
            throw InflightError("queue \(queue): inflight region holds \(descNum) descriptors, the queue has \(size)")
        }
        let recordedUsed = Self.load16(region, Offset.usedIdx)
        let behind = usedIndex &- recordedUsed
        guard behind <= size else {
            throw InflightError("queue \(queue): inflight region used_idx \(recordedUsed) is more than a ring behind used.idx \(usedIndex)")
        }
        // Published but not yet cleared when the previous process died.
        for k in 0..<behind {
            let head = ring.usedHead(at: recordedUsed &+ k)
            if head < UInt32(size) { Self.descriptor(region, UInt16(head)).storeBytes(of: 0, as: UInt8.self) }
        }
        Self.store16(region, Offset.usedIdx, usedIndex)
        regionUsed = usedIndex
        var found: [(counter: UInt64, head: UInt16)] = []
        var highest: UInt64 = 0
        for head in 0..<size {
            let state = Self.descriptor(region, head)
            switch state.load(as: UInt8.self) {
            case 0: continue
            case 1:
                let count = UInt64(littleEndian: state.load(fromByteOffset: 8, as: UInt64.self))
                found.append((count, head))
                highest = max(highest, count)
            default:
                state.storeBytes(of: 0, as: UInt8.self)  // not a state the spec defines
            }
        }
        found.sort { $0.counter < $1.counter }
        resubmitList = found.map(\.head)
        counter = highest &+ 1
        ring.lastAvailableIndex = usedIndex &+ UInt16(found.count)
    }

    // MARK: on the IOThread

    /// The next head to work on: resubmissions first, then the avail ring (marked as taken).
    @inline(__always)
    public func nextHead(from ring: inout SplitVirtqueue) throws(VirtqueueError) -> UInt16? {
        if resubmitNext < resubmitList.count {
            let head = resubmitList[resubmitNext]
            resubmitNext += 1
            return head
        }
        guard let head = try ring.popAvailable() else { return nil }
        let state = Self.descriptor(region, head)
        state.storeBytes(of: counter.littleEndian, toByteOffset: 8, as: UInt64.self)
        spindle_fence_release()
        state.storeBytes(of: 1, as: UInt8.self)
        counter &+= 1
        return head
    }

    /// `ring.publishUsed()` with the region updated around it, in the spec's order.
    @inline(__always)
    public func publishUsed(_ ring: inout SplitVirtqueue) {
        let target = ring.usedIndex
        guard target != regionUsed else { return ring.publishUsed() }
        let lastHead = ring.usedHead(at: target &- 1)
        Self.store16(region, Offset.lastBatchHead, UInt16(truncatingIfNeeded: lastHead))
        spindle_fence_release()
        ring.publishUsed()
        var position = regionUsed
        while position != target {
            // Read back from the used ring we wrote; the guest can scribble on it, so check.
            let head = ring.usedHead(at: position)
            if head < UInt32(size) { Self.descriptor(region, UInt16(head)).storeBytes(of: 0, as: UInt8.self) }
            position &+= 1
        }
        spindle_fence_release()
        Self.store16(region, Offset.usedIdx, target)
        regionUsed = target
    }

    // MARK: layout

    private enum Offset {
        static let version = 8
        static let descNum = 10
        static let lastBatchHead = 12
        static let usedIdx = 14
    }

    @inline(__always)
    private static func descriptor(_ region: UnsafeMutableRawPointer, _ head: UInt16) -> UnsafeMutableRawPointer {
        region + InflightLayout.headerBytes + InflightLayout.descriptorStateBytes * Int(head)
    }

    @inline(__always)
    private static func load16(_ region: UnsafeMutableRawPointer, _ offset: Int) -> UInt16 {
        UInt16(littleEndian: region.load(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    private static func store16(_ region: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        region.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
    }
}

extension SplitVirtqueue {
    /// The head recorded in used-ring element `position` (modulo the ring size).
    @inline(__always)
    func usedHead(at position: UInt16) -> UInt32 {
        UInt32(littleEndian: used.load(fromByteOffset: 4 + 8 * Int(position & mask), as: UInt32.self))
    }
}
