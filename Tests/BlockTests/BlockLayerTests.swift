import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import Synchronization
import Testing

/// Receives completions on an IOThread and reports them to the test through a semaphore.
final class RecordingHandler: IOCompletionHandler, @unchecked Sendable {
    let backend: BlockBackend
    let context: IOContext
    var request: UnsafeMutablePointer<BlockRequest>
    let results = Mutex<[Int32]>([])
    let done = DispatchSemaphoreLite()

    init(backend: BlockBackend, context: IOContext) {
        self.backend = backend
        self.context = context
        request = .allocate(capacity: 1)
        request.initialize(to: BlockRequest())
    }

    func start(id: HandlerID) {
        request.pointee.token = CompletionToken(handler: id, tag: 7)
        guard backend.beginRequest() else { finish(-EAGAIN); return }
        switch backend.submit(request, on: context) {
        case .queued: break
        case .done(let value): finish(value)
        }
    }

    func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
        #expect(tag == 7)
        if let final = backend.complete(request, result: result, on: context) { finish(final) }
    }

    func endOfBatch() {}

    private func finish(_ value: Int32) {
        backend.endRequest()
        results.withLock { $0.append(value) }
        done.signal()
    }
}

/// A tiny semaphore over an eventfd (tests only).
final class DispatchSemaphoreLite: @unchecked Sendable {
    let fd = eventfd(0, Int32(EFD_SEMAPHORE | EFD_CLOEXEC))
    func signal() { var one: UInt64 = 1; _ = write(fd, &one, 8) }
    func wait() { var value: UInt64 = 0; _ = read(fd, &value, 8) }
    deinit { close(fd) }
}

@ControlActor
func runRequest(on thread: IOThread, handler: RecordingHandler, setup: @escaping @Sendable (UnsafeMutablePointer<BlockRequest>) -> Void) -> Int32 {
    thread.post { thread in
        let id = thread.register(handler)
        setup(handler.request)
        handler.start(id: id)
    }
    handler.done.wait()
    return handler.results.withLock { $0.last ?? -999 }
}

func temporaryImage(size: Int) -> String {
    var template = Array("/tmp/spindle-test-XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    precondition(fd >= 0)
    ftruncate(fd, off_t(size))
    close(fd)
    return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

@Suite(.serialized) struct BlockLayerTests {
    @Test @ControlActor func fileWriteThenReadThroughIOThread() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("f0"), driver: .file(FileOptions(filename: path))))
        let backend = try graph.createBackend(name: "dev0", node: NodeName("f0"), permissions: [.consistentRead, .write])
        let thread = try IOThread(id: "t0", cpu: nil)
        thread.start()
        let handler = RecordingHandler(backend: backend, context: thread.context)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        memset(buffer, 0xAB, 4096)
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
        iov.initialize(to: iovec(iov_base: buffer, iov_len: 4096))
        nonisolated(unsafe) let sharedIOV = iov
        let written = runRequest(on: thread, handler: handler) { request in
            request.pointee.operation = .write
            request.pointee.offset = 8192
            request.pointee.length = 4096
            request.pointee.iov = sharedIOV
            request.pointee.iovcnt = 1
        }
        #expect(written == 4096)
        memset(buffer, 0, 4096)
        let read = runRequest(on: thread, handler: handler) { request in
            request.pointee.operation = .read
        }
        #expect(read == 4096)
        #expect(buffer.load(fromByteOffset: 100, as: UInt8.self) == 0xAB)
        // Past the end: EIO, not a crash.
        let pastEnd = runRequest(on: thread, handler: handler) { request in
            request.pointee.offset = 1 << 20
        }
        #expect(pastEnd == -EIO)
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("f0"))
        thread.stop()
    }

    @Test @ControlActor func readOnlyNodeRefusesWriters() throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        var file = FileOptions(filename: path)
        file.readOnly = true
        try graph.openNode(BlockdevOptions(nodeName: NodeName("ro"), driver: .file(file)))
        #expect(throws: BlockError.self) {
            _ = try graph.createBackend(name: "w", node: NodeName("ro"), permissions: [.consistentRead, .write])
        }
        try graph.closeNode(NodeName("ro"))
    }

    @Test @ControlActor func secondWriterIsRefusedByImageLock() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("a"), driver: .file(FileOptions(filename: path))))
        try graph.openNode(BlockdevOptions(nodeName: NodeName("b"), driver: .file(FileOptions(filename: path))))
        let first = try graph.createBackend(name: "first", node: NodeName("a"), permissions: [.consistentRead, .write])
        #expect(throws: BlockError.self) {
            _ = try graph.createBackend(name: "second", node: NodeName("b"), permissions: [.consistentRead, .write])
        }
        // blockdev-del of a node in use is refused.
        #expect(throws: BlockError.self) { try graph.closeNode(NodeName("a")) }
        await graph.deleteBackend(first)
        // Once the first writer is gone, the second may write.
        let second = try graph.createBackend(name: "second", node: NodeName("b"), permissions: [.consistentRead, .write])
        await graph.deleteBackend(second)
        try graph.closeNode(NodeName("a"))
        try graph.closeNode(NodeName("b"))
    }

    @Test @ControlActor func drainWaitsForInFlightAndHoldsNewRequests() async throws {
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("n"), driver: .null(NullOptions())))
        let backend = try graph.createBackend(name: "d", node: NodeName("n"), permissions: [.consistentRead])
        #expect(backend.beginRequest())  // one request in flight
        let finished = Mutex(false)
        let drainTask = Task { @ControlActor in
            await graph.drain(backend)
            finished.withLock { $0 = true }
        }
        await Task.yield()
        #expect(finished.withLock { $0 } == false)
        #expect(backend.beginRequest() == false)  // quiesced: a new request stays queued
        // The last request ends on another thread: drain completes without spinning.
        let thread = Thread { backend.endRequest() }
        thread.join()
        await drainTask.value
        #expect(finished.withLock { $0 })
        graph.resume(backend)
        #expect(backend.beginRequest())
        backend.endRequest()
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("n"))
    }
}

/// Runs a closure on a fresh pthread (for "from another thread" tests).
struct Thread {
    private let handle: pthread_t
    init(_ body: @escaping @Sendable () -> Void) { handle = PlainThread.spawn(body) }
    func join() { pthread_join(handle, nil) }
}

@Suite(.serialized) struct DirectIOTests {
    /// cache.direct=on with a guest buffer that is not aligned: the slot's bounce buffer
    /// carries the data both ways, and the data lands where it should.
    @Test @ControlActor func unalignedBuffersGoThroughTheBounceBuffer() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        var file = FileOptions(filename: path)
        file.direct = true
        do {
            try graph.openNode(BlockdevOptions(nodeName: NodeName("d"), driver: .file(file)))
        } catch {
            // O_DIRECT unsupported on this filesystem: nothing to check here.
            #expect(error.errno == EINVAL)
            return
        }
        let backend = try graph.createBackend(name: "dev", node: NodeName("d"), permissions: [.consistentRead, .write])
        let thread = try IOThread(id: "t-direct", cpu: nil)
        thread.start()
        let handler = RecordingHandler(backend: backend, context: thread.context)
        // Two spans, the first starting 3 bytes into an allocation: unaligned for O_DIRECT.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 8192 + 64, alignment: 4096)
        let first = raw + 3
        let second = raw + 4096 + 32
        memset(first, 0x11, 512)
        memset(second, 0x22, 3584)
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 2)
        iov[0] = iovec(iov_base: first, iov_len: 512)
        iov[1] = iovec(iov_base: second, iov_len: 3584)
        nonisolated(unsafe) let sharedIOV = iov
        let written = runRequest(on: thread, handler: handler) { request in
            request.pointee.operation = .write
            request.pointee.offset = 4096
            request.pointee.length = 4096
            request.pointee.iov = sharedIOV
            request.pointee.iovcnt = 2
        }
        #expect(written == 4096)
        memset(first, 0, 512)
        memset(second, 0, 3584)
        let read = runRequest(on: thread, handler: handler) { $0.pointee.operation = .read }
        #expect(read == 4096)
        #expect(first.load(fromByteOffset: 511, as: UInt8.self) == 0x11)
        #expect(second.load(fromByteOffset: 0, as: UInt8.self) == 0x22)
        // And on disk, at the right place.
        let fd = open(path, O_RDONLY)
        var byte: UInt8 = 0
        pread(fd, &byte, 1, 4096 + 512)
        close(fd)
        #expect(byte == 0x22)
        await graph.deleteBackend(backend)
        try graph.closeNode(NodeName("d"))
        thread.stop()
    }
}
