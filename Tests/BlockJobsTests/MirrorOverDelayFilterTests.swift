import BlockIO
import CSpindle
import Glibc
import IOThreads
import Testing

/// A mirror filter above x-delay data paths: each keeps its own stage in the request
/// (filterStage and holdStage), so a held source completion comes back to the mirror and a
/// failing target is seen as such.
@Suite struct MirrorOverDelayFilterTests {
    /// Runs one request to its final result, reaping the context's CQEs.
    func run(_ request: UnsafeMutablePointer<BlockRequest>, through io: any BlockDriverIO, on context: IOContext) -> Int32 {
        if case .done(let result) = io.submit(request, on: context) { return result }
        while true {
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            _ = io_uring_submit_and_wait(context.ring, 1)
            guard io_uring_peek_cqe(context.ring, &cqe) == 0, let cqe else { continue }
            let result = cqe.pointee.res
            io_uring_cqe_seen(context.ring, cqe)
            if let final = io.complete(request, result: result, on: context) { return final }
        }
    }

    @Test func heldSourceCompletionAndFailingTargetUnderAMirror() throws {
        let context = try IOContext(entries: 4)
        let source = DelayFilterIO(child: NullIO(length: 1 << 20, readZeroes: true, writable: true),
                                   holdEvery: 1, holdMilliseconds: 10, failEvery: 0, failErrno: EIO)
        let target = DelayFilterIO(child: NullIO(length: 1 << 20, readZeroes: true, writable: true),
                                   holdEvery: 0, holdMilliseconds: 0, failEvery: 1, failErrno: ENOSPC)
        let bitmap = DirtyBitmap(length: 1 << 20, granularity: 64 << 10)
        let mirror = MirrorFilterIO(source: source, target: target, bitmap: bitmap)
        mirror.startWritingThrough()
        let request = UnsafeMutablePointer<BlockRequest>.allocate(capacity: 1)
        defer { request.deallocate() }
        request.initialize(to: BlockRequest())
        request.pointee.operation = .write
        request.pointee.offset = 128 << 10
        request.pointee.length = 4096
        request.pointee.token = CompletionToken(rawValue: 42)
        let start = ContinuousClock.now
        // The source's completion is held (a timeout CQE), then the write goes on to the
        // target, which fails it: the guest still gets the source's success.
        #expect(run(request, through: mirror, on: context) == 4096)
        #expect(ContinuousClock.now - start >= .milliseconds(10))
        #expect(mirror.targetErrno == ENOSPC)
        #expect(bitmap.dirtyCount == 1)
    }
}
