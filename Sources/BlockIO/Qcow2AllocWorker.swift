import CSpindle
import ControlThread
import Glibc
import IOThreads

/// The allocation worker of one writable qcow2 image: a plain thread that takes over the
/// slow path of writes, discards and write-zeroes, so that no IOThread ever blocks on the
/// image's metadata I/O (its other queues and exports keep going while an allocation waits).
///
/// An IOThread hands a request over (`handOver`: a list through the requests' slots under
/// a mutex, and an eventfd write when the worker sleeps; a slow path, never the fast one)
/// and goes on. The worker takes everything waiting and runs it as one round under the
/// allocator's lock: every request's piece is planned and its data written, then one
/// fdatasync serves them all (group commit) before their entries are written
/// (`Qcow2Allocator.finishRound`). Each result goes back to the request's IOThread as a CQE
/// with the request's own token, posted by the kernel into that IOThread's ring with
/// IORING_OP_MSG_RING from the worker's small ring (nothing allocated per request: the
/// request is its own queue entry, the result travels in the CQE, and the completion
/// counts against the CQ entry the request's queue reserved for it).
///
/// The thread starts with the first request handed over (an image that is never written
/// has none) and inherits that IOThread's CPU placement; `stop` ends it (at close, once no
/// request is in flight). What the slow path allocates: the thread and its ring once, and
/// the round's arena and arrays while they grow to their largest round; nothing per request.
final class Qcow2AllocWorker: @unchecked Sendable {
    private let queue = PosixMutex<Void>(())
    // Under `queue`:
    private var head: UnsafeMutablePointer<BlockRequest>?
    private var tail: UnsafeMutablePointer<BlockRequest>?
    private var sleeping = false
    private var stopping = false
    private var thread: pthread_t?

    /// Written to wake the worker (a counter: a wake-up is never lost).
    private let wakeFD: Int32
    /// The worker's own ring, only for IORING_OP_MSG_RING (used by the worker thread alone).
    private let ring: IOContext
    /// How many times a refused message is tried again before its request is given up.
    private static let routeAttempts = 1_000

    init?() {
        let fd = eventfd(0, Int32(EFD_CLOEXEC))
        guard fd >= 0 else { return nil }
        guard let ring = try? IOContext(entries: 64) else {
            close(fd)
            return nil
        }
        wakeFD = fd
        self.ring = ring
    }

    deinit { close(wakeFD) }

    /// On an IOThread: queues `request` (its `formatDone` says where its next piece starts)
    /// for `allocator`'s next round. false if the worker is stopping or cannot start: the
    /// caller then does the piece itself.
    func handOver(_ request: UnsafeMutablePointer<BlockRequest>, owner: Int32, io: Qcow2IO, allocator: Qcow2Allocator) -> Bool {
        request.pointee.formatNext = nil
        request.pointee.driverOwnerRing = owner
        var wake = false
        let queued: Bool = queue.withLock { _ in
            if stopping { return false }
            if thread == nil {
                thread = PlainThread.spawn { [self] in run(io: io, allocator: allocator) }
            }
            if let last = tail { last.pointee.formatNext = request } else { head = request }
            tail = request
            if sleeping {
                sleeping = false
                wake = true
            }
            return true
        }
        if wake {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
        return queued
    }

    /// On the control thread, once no request of the image is in flight: ends the thread.
    func stop() {
        let running: pthread_t? = queue.withLock { _ in
            stopping = true
            return thread
        }
        guard let running else { return }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        pthread_join(running, nil)
        queue.withLock { _ in thread = nil }
    }

    private func run(io: Qcow2IO, allocator: Qcow2Allocator) {
        ring.bindToCurrentThread()
        while true {
            var taken: UnsafeMutablePointer<BlockRequest>?
            var exit = false
            queue.withLock { _ in
                taken = head
                head = nil
                tail = nil
                if taken == nil {
                    exit = stopping
                    sleeping = !stopping
                }
            }
            if exit { return }
            guard let batch = taken else {
                var count: UInt64 = 0
                while read(wakeFD, &count, 8) < 0 && errno == EINTR {}
                continue
            }
            let waiting = allocator.runRound(io, batch) { request, result in self.route(request, result) }
            if let first = waiting.first, let last = waiting.last {
                // Pieces that must see this round's entries go first in the next round.
                queue.withLock { _ in
                    last.pointee.formatNext = head
                    head = first
                    if tail == nil { tail = last }
                }
            }
            submitRoutes()
        }
    }

    /// Queues the message that completes `request` on its IOThread with `result`.
    private func route(_ request: UnsafeMutablePointer<BlockRequest>, _ result: Int32) {
        request.pointee.driverResult = result
        guard let sqe = ring.sqe() else { return }  // only if this ring is broken
        io_uring_prep_msg_ring(sqe, request.pointee.driverOwnerRing, UInt32(bitPattern: result), request.pointee.token.rawValue, 0)
        io_uring_sqe_set_flags(sqe, UInt32(1) << UInt32(IOSQE_CQE_SKIP_SUCCESS_BIT))
        sqe.pointee.user_data = UInt64(UInt(bitPattern: request))
    }

    /// Submits the round's messages; one the kernel refused (its only CQE) is sent again.
    private func submitRoutes() {
        var attempts = 0
        while true {
            ring.submitNow()
            var failed = false
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            while io_uring_peek_cqe(ring.ring, &cqe) == 0, let entry = cqe {
                let request = UnsafeMutablePointer<BlockRequest>(bitPattern: UInt(entry.pointee.user_data))
                let refused = entry.pointee.res < 0
                io_uring_cqe_seen(ring.ring, entry)
                if let request, refused, attempts < Self.routeAttempts {
                    route(request, request.pointee.driverResult)
                    failed = true
                }
            }
            if !failed { return }
            attempts += 1
            usleep(1000)
        }
    }
}
