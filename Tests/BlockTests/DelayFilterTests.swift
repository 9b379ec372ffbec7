import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import Synchronization
import Testing

/// Submits a batch of 4 KiB requests at once on an IOThread (slot i at offset i * 4096, a
/// write of byte i + 1 or a read) and records the order and results of their completions.
final class BatchHandler: IOCompletionHandler, @unchecked Sendable {
    let backend: BlockBackend
    let context: IOContext
    let count: Int
    let requests: UnsafeMutablePointer<BlockRequest>
    let buffers: UnsafeMutableRawPointer
    let iovs: UnsafeMutablePointer<iovec>
    /// (slot, result) in completion order.
    let completions = Mutex<[(slot: Int, result: Int32)]>([])
    let done = DispatchSemaphoreLite()

    init(backend: BlockBackend, context: IOContext, count: Int) {
        self.backend = backend
        self.context = context
        self.count = count
        requests = .allocate(capacity: count)
        requests.initialize(repeating: BlockRequest(), count: count)
        buffers = .allocate(byteCount: count * 4096, alignment: 4096)
        iovs = .allocate(capacity: count)
        for slot in 0..<count { iovs[slot] = iovec(iov_base: buffers + slot * 4096, iov_len: 4096) }
    }

    deinit {
        requests.deallocate()
        buffers.deallocate()
        iovs.deallocate()
    }

    /// Submits every slot (call on the IOThread).
    func start(id: HandlerID, operation: BlockOperation) {
        for slot in 0..<count {
            memset(iovs[slot].iov_base, operation == .write ? Int32(slot + 1) : 0, 4096)
            requests[slot].operation = operation
            requests[slot].offset = UInt64(slot) * 4096
            requests[slot].length = 4096
            requests[slot].iov = iovs + slot
            requests[slot].iovcnt = 1
            requests[slot].token = CompletionToken(handler: id, tag: UInt64(slot))
            guard backend.beginRequest() else { finish(slot, -EAGAIN); continue }
            switch backend.submit(requests + slot, on: context) {
            case .queued: break
            case .done(let result): finish(slot, result)
            }
        }
    }

    func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
        let slot = Int(tag)
        if let final = backend.complete(requests + slot, result: result, on: context) { finish(slot, final) }
    }

    func endOfBatch() {}

    private func finish(_ slot: Int, _ result: Int32) {
        backend.endRequest()
        completions.withLock { $0.append((slot, result)) }
        done.signal()
    }

    /// Runs the batch on `thread` and waits for every completion.
    @ControlActor
    func run(on thread: IOThread, _ operation: BlockOperation) -> [(slot: Int, result: Int32)] {
        thread.post { thread in
            let id = thread.register(self)
            self.start(id: id, operation: operation)
        }
        for _ in 0..<count { done.wait() }
        return completions.withLock { $0 }
    }
}

/// The x-delay filter through a BlockBackend on a real IOThread.
@Suite(.serialized) struct DelayFilterTests {
    @ControlActor
    static func delayNode(_ graph: BlockGraph, over child: String, _ configure: (inout DelayFilterOptions) -> Void) throws {
        var delay = DelayFilterOptions(child: NodeName(child))
        configure(&delay)
        try graph.openNode(BlockdevOptions(nodeName: NodeName("delay"), driver: .delay(delay)))
    }

    @Test @ControlActor func holdsEveryNthCompletionSoTheyComeOutOfOrder() async throws {
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("n"), driver: .null(NullOptions())))
        try Self.delayNode(graph, over: "n") { $0.holdEvery = 2; $0.holdMilliseconds = 100 }
        let backend = try graph.createBackend(name: "dev", node: NodeName("delay"), permissions: [.consistentRead])
        let thread = try IOThread(id: "t-delay", cpu: nil)
        thread.start()
        let handler = BatchHandler(backend: backend, context: thread.context, count: 4)
        let start = ContinuousClock.now
        let completions = handler.run(on: thread, .read)
        let elapsed = ContinuousClock.now - start
        // null-co finishes at once: the 1st and 3rd go up at once, the 2nd and 4th after the hold.
        #expect(completions.prefix(2).map(\.slot) == [0, 2])
        #expect(Set(completions.suffix(2).map(\.slot)) == [1, 3])
        #expect(completions.allSatisfy { $0.result == 4096 })
        #expect(elapsed >= .milliseconds(100))
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("delay"))
        try graph.closeNode(NodeName("n"))
        thread.stop()
    }

    @Test @ControlActor func heldWritesToAFileCompleteWithTheirResultAndLand() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("f"), driver: .file(FileOptions(filename: path))))
        try Self.delayNode(graph, over: "f") { $0.holdEvery = 3; $0.holdMilliseconds = 50 }
        let backend = try graph.createBackend(name: "dev", node: NodeName("delay"), permissions: [.consistentRead, .write])
        let thread = try IOThread(id: "t-delay-file", cpu: nil)
        thread.start()
        let handler = BatchHandler(backend: backend, context: thread.context, count: 6)
        let completions = handler.run(on: thread, .write)
        #expect(completions.map(\.slot).sorted() == Array(0..<6))
        #expect(completions.map(\.slot) != Array(0..<6), "two of six completions were held: \(completions.map(\.slot))")
        #expect(completions.allSatisfy { $0.result == 4096 })
        #expect(imageBytes(path, count: 6) == (0..<6).map { UInt8($0 + 1) })
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("delay"))
        try graph.closeNode(NodeName("f"))
        thread.stop()
    }

    @Test @ControlActor func failsEveryNthRequestWithTheErrnoWithoutPassingItOn() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("f"), driver: .file(FileOptions(filename: path))))
        try Self.delayNode(graph, over: "f") { $0.failEvery = 3; $0.failErrno = ENOSPC }
        let backend = try graph.createBackend(name: "dev", node: NodeName("delay"), permissions: [.consistentRead, .write])
        let thread = try IOThread(id: "t-fail", cpu: nil)
        thread.start()
        let handler = BatchHandler(backend: backend, context: thread.context, count: 6)
        let results = Dictionary(uniqueKeysWithValues: handler.run(on: thread, .write).map { ($0.slot, $0.result) })
        #expect(results == [0: 4096, 1: 4096, 2: -ENOSPC, 3: 4096, 4: 4096, 5: -ENOSPC])
        // The failed writes never reached the image.
        #expect(imageBytes(path, count: 6) == [1, 2, 0, 4, 5, 0])
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("delay"))
        try graph.closeNode(NodeName("f"))
        thread.stop()
    }
}

/// The first byte of each of the first `count` 4 KiB blocks of an image.
func imageBytes(_ path: String, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    defer { close(fd) }
    return (0..<count).map { block in
        var byte: UInt8 = 0xEE
        _ = pread(fd, &byte, 1, off_t(block * 4096))
        return byte
    }
}
