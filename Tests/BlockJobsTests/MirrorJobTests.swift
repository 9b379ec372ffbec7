import BlockCommon
import BlockGraph
import BlockIO
import BlockJobs
import ControlThread
import Glibc
import IOThreads
import Synchronization
import Testing

/// A "guest" on an IOThread: writes 4 KiB blocks through a BlockBackend one after the other,
/// each block filled with one byte value, and remembers the last value of every block (one
/// write in flight at a time, so the shadow is exactly what the disk must hold).
final class LoopingWriter: IOCompletionHandler, @unchecked Sendable {
    static let block = 4096
    let backend: BlockBackend
    let thread: IOThread
    let blocks: Int
    let completed = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let stopRequested = Atomic<Bool>(false)
    let stopped = Atomic<Bool>(false)
    /// Written on the IOThread; read by the test only once `stopped`.
    nonisolated(unsafe) var shadow: [UInt8]
    private var id = IOThread.ignoredHandler
    private var sequence: UInt64 = 0
    private let request = UnsafeMutablePointer<BlockRequest>.allocate(capacity: 1)
    private let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    private let buffer = UnsafeMutableRawPointer.allocate(byteCount: LoopingWriter.block, alignment: 4096)
    private var value: UInt8 = 0
    private var blockIndex = 0

    init(backend: BlockBackend, thread: IOThread, blocks: Int, initial: [UInt8]) {
        self.backend = backend
        self.thread = thread
        self.blocks = blocks
        shadow = initial
        request.initialize(to: BlockRequest())
        iov.initialize(to: iovec(iov_base: buffer, iov_len: Self.block))
    }

    func start() {
        thread.post { [self] thread in
            id = thread.register(self)
            next()
        }
    }

    private func next() {
        if stopRequested.load(ordering: .sequentiallyConsistent) {
            stopped.store(true, ordering: .sequentiallyConsistent)
            return
        }
        guard backend.beginRequest() else {
            // Drained (the mirror's final sync or pivot): try again shortly, like a ring that waits.
            thread.post { [self] _ in usleep(100); next() }
            return
        }
        sequence &+= 0x9E37_79B9_7F4A_7C15
        blockIndex = Int(sequence >> 40) % blocks
        value = UInt8(truncatingIfNeeded: sequence >> 32) | 1
        memset(buffer, Int32(value), Self.block)
        request.pointee = BlockRequest()
        request.pointee.operation = .write
        request.pointee.offset = UInt64(blockIndex * Self.block)
        request.pointee.length = UInt64(Self.block)
        request.pointee.iov = iov
        request.pointee.iovcnt = 1
        request.pointee.token = CompletionToken(handler: id, tag: 1)
        switch backend.submit(request, on: thread.context) {
        case .queued: break
        case .done(let result): finish(result)
        }
    }

    func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
        if let final = backend.complete(request, result: result, on: thread.context) { finish(final) }
    }

    func endOfBatch() {}

    private func finish(_ result: Int32) {
        backend.endRequest()
        if result == Int32(Self.block) {
            shadow[blockIndex] = value
            completed.wrappingAdd(1, ordering: .sequentiallyConsistent)
        } else {
            failed.wrappingAdd(1, ordering: .sequentiallyConsistent)
        }
        next()
    }
}

@ControlActor
private func waitUntil(_ what: String, _ condition: () -> Bool) async {
    for _ in 0..<6000 {
        if condition() { return }
        try? await Task.sleep(nanoseconds: 5_000_000)
    }
    Issue.record("timed out waiting for \(what)")
}

/// The whole mirror on real parts (files, an IOThread, the graph, the copier thread) while a
/// writer keeps writing: READY, pivot, and the target then holds every write, the last one
/// of each block included. Run under ThreadSanitizer too.
@Suite(.serialized) struct MirrorJobTests {
    @Test @ControlActor func mirrorWhileWritingThenPivot() async throws {
        let blocks = 2048  // 8 MiB
        let size = blocks * LoopingWriter.block
        let initial = (0..<blocks).map { UInt8($0 % 200 + 1) }
        let source = try tempFile(size: size) { fd in
            for (index, byte) in initial.enumerated() {
                var block = [UInt8](repeating: byte, count: LoopingWriter.block)
                _ = pwrite(fd, &block, block.count, off_t(index * LoopingWriter.block))
            }
        }
        let target = try tempFile(size: size) { _ in }
        defer { unlink(source); unlink(target) }
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("src"), driver: .file(FileOptions(filename: source))))
        try graph.openNode(BlockdevOptions(nodeName: NodeName("tgt"), driver: .file(FileOptions(filename: target))))
        let backend = try graph.createBackend(name: "dev", node: NodeName("src"), permissions: [.consistentRead, .write])
        let thread = try IOThread(id: "mirror-test", cpu: nil)
        thread.start()
        let writer = LoopingWriter(backend: backend, thread: thread, blocks: blocks, initial: initial)
        writer.start()
        await waitUntil("first writes") { writer.completed.load(ordering: .sequentiallyConsistent) > 50 }

        let registry = JobRegistry()
        // Throttled, so that the writer dirties blocks behind the copy.
        try await MirrorJob.start(MirrorOptions(jobID: "m", source: NodeName("src"), target: NodeName("tgt"),
                                                speed: 16 << 20, granularity: 64 << 10, bufferSize: 256 << 10),
                                  graph: graph, registry: registry)
        func status() -> JobStatus? { registry.withJobLock { (try? $0.find("m"))?.status } }
        #expect(throws: BlockError.self) { try graph.closeNode(NodeName("src")) }
        await waitUntil("ready") { status() == .ready }
        let atReady = writer.completed.load(ordering: .sequentiallyConsistent)
        await waitUntil("writes while ready") { writer.completed.load(ordering: .sequentiallyConsistent) > atReady + 200 }
        try registry.withJobLock { jobs throws(JobError) in try jobs.complete("m") }
        await waitUntil("job gone") { status() == nil }
        #expect(graph.rootNode(of: backend)?.name == NodeName("tgt"))
        #expect(graph.users(of: NodeName("src")).isEmpty)
        let atPivot = writer.completed.load(ordering: .sequentiallyConsistent)
        await waitUntil("writes on the target") { writer.completed.load(ordering: .sequentiallyConsistent) > atPivot + 100 }
        writer.stopRequested.store(true, ordering: .sequentiallyConsistent)
        await waitUntil("writer stopped") { writer.stopped.load(ordering: .sequentiallyConsistent) }
        #expect(writer.failed.load(ordering: .sequentiallyConsistent) == 0)

        // The source is free; the target holds exactly what the writer wrote last.
        try graph.closeNode(NodeName("src"))
        let fd = open(target, O_RDONLY)
        defer { close(fd) }
        var mismatches = 0
        var block = [UInt8](repeating: 0, count: LoopingWriter.block)
        for index in 0..<blocks {
            _ = pread(fd, &block, block.count, off_t(index * LoopingWriter.block))
            if block.contains(where: { $0 != writer.shadow[index] }) { mismatches += 1 }
        }
        #expect(mismatches == 0)
        let events = registry.takeEvents()
        #expect(statusChanges(events, "m") == [.created, .running, .ready, .waiting, .pending, .concluded, .null])
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("tgt"))
        thread.stop()
    }

    private func tempFile(size: Int, fill: (Int32) -> Void) throws -> String {
        var template = Array("/tmp/spindle-mirror-test-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        precondition(fd >= 0)
        ftruncate(fd, off_t(size))
        fill(fd)
        close(fd)
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
