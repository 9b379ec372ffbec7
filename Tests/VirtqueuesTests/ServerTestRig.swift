import ControlThread
import CSpindle
import Glibc
import IOThreads
import SpindleTestSupport
import Synchronization
import VhostUser
@testable import Virtqueues

/// A device handler for server tests: it answers nothing by itself; the test completes a
/// request by sending a NOP through the IOThread's io_uring with the request's slot as tag
/// (so completions take the real CQE path). The used length it reports is head + 100.
/// Everything here is touched on the IOThread only (tests read it through `rig.onThread`).
final class FakeHandler: VirtqueueRequestHandler, @unchecked Sendable {
    struct NoStatusByte: Error, CustomStringConvertible {
        var description: String { "fake request without a writable byte" }
    }
    /// The longest chain a request may have; set before the queue is made.
    var longestSpans = 4
    var spansPerRequest: Int { longestSpans }
    /// Spans a slot holds itself (longer chains borrow a span block); set before the queue is made.
    var inlineSpans = 4
    var inlineSpansPerRequest: Int { inlineSpans }
    var slotsDiscarded = 0
    func discardSlots() { slotsDiscarded += 1 }
    var handlerID = IOThread.ignoredHandler
    var slotCount = 0
    /// Answer every request at once instead of waiting for a NOP.
    var finishAtOnce = false
    var quiesced = false
    var headOfSlot: [Int: UInt16] = [:]
    /// Kept after release, so that a repeated completion is reported again (the server must
    /// ignore it).
    var lastHeadOfSlot: [Int: UInt16] = [:]
    var started: [UInt16] = []
    var completions = 0
    var released: [Int] = []
    var busyPeriodsBegun = 0
    var busyPeriodsEnded = 0

    func prepare(slotCount: Int, handlerID: HandlerID) {
        self.slotCount = slotCount
        self.handlerID = handlerID
    }
    func beginBusyPeriod() -> Bool {
        guard !quiesced else { return false }
        busyPeriodsBegun += 1
        return true
    }
    var isQuiescing: Bool { quiesced }
    func endBusyPeriod() { busyPeriodsEnded += 1 }

    func start(slot: Int, chain: DescriptorChain, on context: IOContext) -> VirtqueueRequestStart<NoStatusByte> {
        guard chain.writableLength > 0 else { return .unanswerable(NoStatusByte()) }
        headOfSlot[slot] = chain.head
        lastHeadOfSlot[slot] = chain.head
        started.append(chain.head)
        return finishAtOnce ? .finished(usedLength: UInt32(chain.head) + 100) : .started
    }
    func complete(tag: UInt64, result: Int32, on context: IOContext) -> VirtqueueFinishedRequest? {
        completions += 1
        let slot = Int(tag)
        guard let head = lastHeadOfSlot[slot] else { return nil }
        return VirtqueueFinishedRequest(slot: slot, usedLength: UInt32(head) + 100)
    }
    func release(slot: Int) {
        released.append(slot)
        headOfSlot[slot] = nil
    }
    func slot(ofHead head: UInt16) -> Int? { headOfSlot.first { $0.value == head }?.key }
}

final class FakeQueue: VirtqueueServer<SplitVirtqueue, FakeHandler>, IOCompletionHandler, IOPoller, @unchecked Sendable {}

final class Flag: Sendable {
    let value = Atomic<Int>(0)
}

/// A real IOThread, a 16-entry split ring in anonymous test memory (gpa == uva), eventfds
/// for kick and call, and a `FakeQueue` on them.
final class ServerTestRig: @unchecked Sendable {
    static let ringSize: UInt16 = 16
    /// The guest's side of the ring.
    let guest = MockSplitQueue.flat(size: Int(ServerTestRig.ringSize))
    let thread: IOThread
    let kickFD = eventfd(0, Int32(EFD_NONBLOCK))
    let callFD = eventfd(0, Int32(EFD_NONBLOCK))
    let handler = FakeHandler()
    let queue: FakeQueue
    let broken = Flag()
    /// The queue's inflight region (INFLIGHT_SHMFD), when asked for.
    let inflight: InflightBuffer?

    @ControlActor
    init(slots: Int = 16, inflight withInflight: Bool = false, inlineSpans: Int = 4,
         maxSpanBlocks: Int = SpanBlockPool.defaultMaxBlocks) throws {
        var ring = try guest.queue()
        var tracker: InflightTracker?
        if withInflight {
            let (fd, description) = try InflightBuffer.allocate(queues: 1, queueSize: Int(Self.ringSize))
            defer { close(fd) }
            let buffer = try InflightBuffer(fd: fd, description: description, maxQueues: 1)
            tracker = try InflightTracker(buffer: buffer, queue: 0, ring: &ring)
            inflight = buffer
        } else {
            inflight = nil
        }
        thread = try IOThread(id: "vq-test", cpu: nil, pollMaxNs: 0, maxSpanBlocks: maxSpanBlocks)
        handler.inlineSpans = inlineSpans
        queue = FakeQueue(index: 0, ring: ring, handler: handler, kickFD: kickFD, callFD: callFD, slotCount: slots,
                          inflight: tracker, logger: .init(label: "vq-test"))
        let broken = self.broken
        queue.onBroken = { _, _ in broken.value.add(1, ordering: .relaxed) }
        thread.start()
        let queue = self.queue
        thread.post { queue.start(on: $0) }
    }

    /// Stops the queue (if still running) and the thread.
    @ControlActor
    func tearDown() async {
        _ = await queue.stop(on: thread)
        thread.stop()
        close(kickFD)
        close(callFD)
    }

    // MARK: the guest's side (from the test thread, with the queue's thread told by a kick)

    /// Lays out head `head` as one writable 16-byte descriptor (or a broken chain).
    func setDescriptor(_ head: UInt16, writable: Bool = true, nextOutOfRange: Bool = false) {
        guest.setDescriptor(Int(head), address: 0x10000 + 0x100 * UInt64(head), length: 16,
                            flags: writable ? VirtqueueLayout.descriptorFlagWrite : 0)
        if nextOutOfRange { guest.pointPastTable(Int(head)) }
    }

    /// Makes `heads` available (release-ordered avail.idx) and kicks.
    func offer(_ heads: UInt16...) {
        guest.offer(heads)
        var one: UInt64 = 1
        _ = write(kickFD, &one, 8)
    }

    /// Lays out a chain of `count` descriptors from descriptor `first` (16 bytes each, the
    /// last one writable), returning its head.
    func setLongChain(first: Int, count: Int) -> UInt16 {
        let buffers = (0..<count).map { i in
            (gpa: 0x10000 + 0x100 * UInt64(first + i), length: UInt32(16), writable: i == count - 1)
        }
        return guest.setChain(buffers, first: first)
    }

    var usedIndex: UInt16 { guest.usedIndex }

    /// The used ring's elements so far: (head, length).
    var used: [(head: UInt32, length: UInt32)] { guest.usedElements.map { ($0.id, $0.length) } }

    /// The inflight flag of `head` in the region (1: taken and not yet on the used ring).
    func inflightFlag(_ head: Int) -> UInt8 {
        inflight!.base.load(fromByteOffset: InflightLayout.headerBytes + InflightLayout.descriptorStateBytes * head, as: UInt8.self)
    }

    /// The region's used_idx.
    var inflightUsedIndex: UInt16 { inflight!.base.load(fromByteOffset: 14, as: UInt16.self) }

    // MARK: the queue's thread

    /// Runs `body` on the IOThread and returns its result.
    func onThread<T: Sendable>(_ body: @escaping @Sendable (FakeHandler) -> T) async -> T {
        let handler = handler
        return await withCheckedContinuation { continuation in
            thread.post { _ in continuation.resume(returning: body(handler)) }
        }
    }

    /// Completes the request at `head` through the IOThread's io_uring (a NOP carrying its
    /// slot's token), `times` times (a repeated completion must change nothing).
    func complete(head: UInt16, times: Int = 1) async {
        let handler = handler
        let ok = await onThreadWithContext { context in
            guard let slot = handler.slot(ofHead: head) else { return false }
            for _ in 0..<times {
                guard let sqe = context.sqe() else { return false }
                io_uring_prep_nop(sqe)
                sqe.pointee.user_data = CompletionToken(handler: handler.handlerID, tag: UInt64(slot)).rawValue
            }
            return true
        }
        precondition(ok, "head \(head) is not in flight")
    }

    private func onThreadWithContext<T: Sendable>(_ body: @escaping @Sendable (IOContext) -> T) async -> T {
        await withCheckedContinuation { continuation in
            thread.post { continuation.resume(returning: body($0.context)) }
        }
    }

    /// Waits (up to 5 s) until `condition` holds on the IOThread.
    func eventually(_ condition: @escaping @Sendable (FakeHandler) -> Bool) async -> Bool {
        for _ in 0..<500 {
            if await onThread(condition) { return true }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return false
    }
}
