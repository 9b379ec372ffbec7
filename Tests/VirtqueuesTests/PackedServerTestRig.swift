import ControlThread
import CSpindle
import Glibc
import IOThreads
import SpindleTestSupport
import VhostUser
@testable import Virtqueues

final class FakePackedQueue: VirtqueueServer<PackedVirtqueue, FakeHandler>, IOCompletionHandler, IOPoller,
                             @unchecked Sendable {}

/// `ServerTestRig`'s packed twin: a real IOThread, a packed ring of any size in test memory
/// (`MockPackedQueue`, the driver's side), kick and call eventfds and a `FakePackedQueue`.
/// The driver is used from the test's task only; the device from the IOThread.
final class PackedServerTestRig: @unchecked Sendable {
    let driver: MockPackedQueue
    let thread: IOThread
    let kickFD = eventfd(0, Int32(EFD_NONBLOCK))
    let callFD = eventfd(0, Int32(EFD_NONBLOCK))
    let handler = FakeHandler()
    let queue: FakePackedQueue
    let broken = Flag()
    /// Used descriptors the driver has read so far: (id, length), in ring order.
    private(set) var used: [(id: UInt16, length: UInt32)] = []

    @ControlActor
    init(size: Int, inlineSpans: Int, longestSpans: Int = 4, maxSpanBlocks: Int = SpanBlockPool.defaultMaxBlocks) throws {
        driver = MockPackedQueue(size: size)
        let ring = try driver.queue(features: .indirectDescriptors)
        thread = try IOThread(id: "vq-packed-test", cpu: nil, pollMaxNs: 0, maxSpanBlocks: maxSpanBlocks)
        handler.inlineSpans = inlineSpans
        handler.longestSpans = longestSpans
        queue = FakePackedQueue(index: 0, ring: ring, handler: handler, kickFD: kickFD, callFD: callFD,
                                slotCount: size, inflight: nil, logger: .init(label: "vq-packed-test"))
        let broken = self.broken
        queue.onBroken = { _, _ in broken.value.add(1, ordering: .relaxed) }
        thread.start()
        let queue = self.queue
        thread.post { queue.start(on: $0) }
    }

    /// Stops the queue (if still running) and the thread; the base GET_VRING_BASE would get.
    @ControlActor @discardableResult
    func tearDown() async -> PackedVringBase {
        let base = await queue.stop(on: thread)
        thread.stop()
        close(kickFD)
        close(callFD)
        return PackedVringBase(encoded: base)
    }

    /// `count` 16-byte buffers for buffer `id`, the last one writable.
    static func buffers(id: UInt16, count: Int) -> [(gpa: UInt64, length: UInt32, writable: Bool)] {
        (0..<count).map { (0x10000 + 0x1000 * UInt64(id) + 0x20 * UInt64($0), 16, $0 == count - 1) }
    }

    /// Makes buffer `id` available as a chain of `count` ring descriptors (or as one indirect
    /// descriptor with a table of `count` entries), without kicking.
    func offer(id: UInt16, count: Int, indirect: Bool = false) {
        if indirect {
            driver.offerIndirect(table: 0x80000 + 0x400 * UInt64(id), entries: Self.buffers(id: id, count: count), id: id)
        } else {
            driver.offer(Self.buffers(id: id, count: count), id: id)
        }
    }

    func kick() {
        var one: UInt64 = 1
        _ = write(kickFD, &one, 8)
    }

    /// Reads the used descriptors published since the last call into `used`.
    func readUsed() {
        while let next = driver.takeUsed() { used.append((next.id, next.length)) }
    }

    /// Blocks lent out by the thread's pool now.
    func blocksInUse() async -> Int {
        let thread = thread
        return await onThread { _ in thread.spanBlocks.inUseCount }
    }

    var isBroken: Bool { broken.value.load(ordering: .relaxed) > 0 }

    func onThread<T: Sendable>(_ body: @escaping @Sendable (FakeHandler) -> T) async -> T {
        let handler = handler
        return await withCheckedContinuation { continuation in
            thread.post { _ in continuation.resume(returning: body(handler)) }
        }
    }

    /// Completes the request of buffer `id` through the IOThread's io_uring (a NOP carrying
    /// its slot's token).
    func complete(id: UInt16) async {
        let handler = handler
        let ok = await withCheckedContinuation { continuation in
            thread.post { thread in
                guard let slot = handler.slot(ofHead: id), let sqe = thread.context.sqe() else {
                    return continuation.resume(returning: false)
                }
                io_uring_prep_nop(sqe)
                sqe.pointee.user_data = CompletionToken(handler: handler.handlerID, tag: UInt64(slot)).rawValue
                continuation.resume(returning: true)
            }
        }
        precondition(ok, "buffer \(id) is not in flight")
    }

    /// Waits (up to 5 s) until `condition` holds on the IOThread.
    func eventually(_ condition: @escaping @Sendable (FakeHandler) -> Bool) async -> Bool {
        for _ in 0..<500 {
            if await onThread(condition) { return true }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return false
    }

    /// Waits (up to 5 s) until the driver has read `count` used descriptors in all.
    func eventuallyUsed(_ count: Int) async -> Bool {
        for _ in 0..<500 {
            readUsed()
            if used.count >= count { return true }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return false
    }
}
