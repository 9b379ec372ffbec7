import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import Logging
import VhostUser

/// One virtqueue of a virtio-blk device, served on one IOThread: it waits for guest kicks
/// (a multishot poll on the kick eventfd in the IOThread's io_uring), takes requests off the
/// ring into preallocated slots, submits them through the BlockBackend's I/O API with iovecs
/// pointing into guest memory, and completes them into the used ring, signalling the call
/// eventfd once per batch and only when the driver asked (EVENT_IDX).
///
/// Built on the control thread, then owned by its IOThread: every method but the
/// constructor and the `async` control helpers runs there.
public final class VirtioBlkQueue: IOCompletionHandler, IOPoller, @unchecked Sendable {
    public let index: Int
    let device: VirtioBlkDevice
    /// The ring lives behind a pointer so calls on it work in place: a struct stored in a
    /// class property is copied (retaining its GuestMemory) for every non-mutating call.
    private let ringStorage: UnsafeMutablePointer<SplitVirtqueue>
    private var ring: SplitVirtqueue {
        unsafeAddress { UnsafePointer(ringStorage) }
        unsafeMutableAddress { ringStorage }
    }
    /// The device's BlockBackend. A strong `let`: calls through it borrow without reference
    /// counting, where an unowned(unsafe) reference is retained around every call.
    private let backend: BlockBackend
    private let kickFD: Int32
    private var callFD: Int32
    /// Built on the IOThread in `start`, so that its memory is first touched there and lands
    /// on that thread's NUMA node.
    private var slots = RequestSlots(count: 0, spansPerRequest: 1)
    private let slotCount: Int
    private let logger: Logger
    /// The queue's inflight region (INFLIGHT_SHMFD), when the frontend shared one.
    private let inflight: InflightTracker?

    /// The IOThread and its ring, set in `start`. Held unretained and lent through
    /// `onThread`/`onContext`: even an unowned(unsafe) reference is retained around every
    /// call, which on the hot path costs a retain/release pair per request.
    private var threadRef: Unmanaged<IOThread>?
    private var contextRef: Unmanaged<IOContext>?
    private var handlerID = IOThread.ignoredHandler

    private enum State { case idle, running, stopping, stopped, broken }
    private var state = State.idle
    /// Requests taken and not yet retired, and whether the queue counts as one in-flight
    /// user of the BlockBackend (see admitRequest).
    private var queueInFlight = 0
    private var holdsBackend = false
    /// Requests wait in the ring because the BlockBackend is quiesced or slots ran out.
    private var heldBack = false
    private var kickArmed = false
    private var kickGeneration: UInt64 = 0
    private var kickBuffer: UInt64 = 0
    /// Everyone waiting for the stop (a move and a GET_VRING_BASE may both ask).
    private var stopCompletions: [@Sendable (UInt16) -> Void] = []
    private var usedSinceSignal = false
    /// The IOThread is busy-polling this queue: leave guest kicks off until it stops.
    private var polling = false
    /// Called on the IOThread, once, when the guest corrupted this ring (the queue has
    /// stopped taking requests); the connection then tells the frontend. Set before `start`.
    public var onBroken: (@Sendable (_ queueIndex: Int, _ reason: String) -> Void)?

    /// Most requests taken off the ring before the IOThread submits them and publishes what
    /// completed: the driver hears of its first completions after 8 requests, not after the
    /// whole ring (QEMU notifies per request; suppression by EVENT_IDX keeps that cheap).
    static let requestsPerPass = 8

    /// Tags with this bit are kick-poll completions (the low bits: the poll generation).
    private static let kickTagBit: UInt64 = 1 << 31
    /// The completion of a poll removal.
    private static let kickRemovalTag: UInt64 = 1 << 30
    /// Poll removals submitted and not yet completed: the queue stops only after they are in.
    private var pendingRemovals = 0
    /// Most CQEs outstanding at once, reserved on the IOThread's ring: one per slot (a request
    /// has one SQE in flight at a time; an x-delay hold's timeout stands in for it), the kick
    /// poll's CQE and its last one (a multishot poll whose CQE finds no room ends instead),
    /// and two poll removals.
    private var completionsNeeded: Int { slotCount + 4 }

    public init(device: VirtioBlkDevice, index: Int, ring: SplitVirtqueue, kickFD: Int32, callFD: Int32,
                inflight: InflightTracker? = nil) {
        // Clearing the kick eventfd must never block the IOThread, whatever flags the frontend
        // created it with (qemu-storage-daemon does the same; writers never block on eventfds).
        let flags = fcntl(kickFD, F_GETFL)
        if flags >= 0 && flags & O_NONBLOCK == 0 { _ = fcntl(kickFD, F_SETFL, flags | O_NONBLOCK) }
        self.device = device
        self.index = index
        ringStorage = .allocate(capacity: 1)
        ringStorage.initialize(to: ring)
        backend = device.backend
        self.kickFD = kickFD
        self.callFD = callFD
        self.inflight = inflight
        slotCount = min(Int(ring.size), VirtioBlkDevice.maxSlotsPerQueue)
        var logger = Logger(label: "spindle.virtio-blk")
        logger[metadataKey: "export"] = "\(device.exportID)"
        logger[metadataKey: "queue"] = "\(index)"
        self.logger = logger
    }

    @inline(__always)
    private func onThread<R>(_ body: (IOThread) -> R) -> R {
        threadRef.unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
    }

    @inline(__always)
    private func onContext<R>(_ body: (IOContext) -> R) -> R {
        contextRef.unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
    }

    deinit {
        ringStorage.deinitialize(count: 1)
        ringStorage.deallocate()
    }

    // MARK: lifecycle (on the IOThread)

    public func start(on thread: IOThread) {
        precondition(state == .idle)
        do throws(CompletionQueueFull) {
            try thread.reserveCompletions(completionsNeeded)
        } catch {
            state = .stopped  // never started: a stop completes at once
            logger.error("queue \(index) not started: \(error); map fewer queues to that iothread (iothread-vq-mapping, or more iothreads) or give the guest's device a smaller queue-size")
            onBroken?(index, "\(error)")
            return
        }
        threadRef = .passUnretained(thread)
        contextRef = .passUnretained(thread.context)
        handlerID = thread.register(self)
        thread.addPoller(self)
        slots = RequestSlots(count: slotCount, spansPerRequest: VirtioBlkDevice.maxSpansPerRequest)
        slots.assignTokens(handler: handlerID)
        state = .running
        armKick()
        processAvailable()
    }

    private func armKick() {
        guard let sqe = onContext({ $0.sqe() }) else { return }
        kickGeneration &+= 1
        io_uring_prep_poll_multishot(sqe, kickFD, UInt32(POLLIN))
        sqe.pointee.user_data = CompletionToken(handler: handlerID, tag: Self.kickTagBit | (kickGeneration & 0xFFFF)).rawValue
        kickArmed = true
    }

    /// Asks io_uring to remove the kick poll. A removal can miss (ENOENT when submitted with
    /// the poll it targets, EALREADY while the poll is completing); it is then tried again.
    private func disarmKick() {
        guard kickArmed, let sqe = onContext({ $0.sqe() }) else { return }
        let target = CompletionToken(handler: handlerID, tag: Self.kickTagBit | (kickGeneration & 0xFFFF)).rawValue
        io_uring_prep_poll_remove(sqe, target)
        sqe.pointee.user_data = CompletionToken(handler: handlerID, tag: Self.kickRemovalTag).rawValue
        pendingRemovals += 1
    }

    /// Stops taking requests; `completion` gets the next avail index once every in-flight
    /// request has completed and the kick poll is gone. Then the queue is unregistered.
    func stop(completion: @escaping @Sendable (UInt16) -> Void) {
        if state == .stopped {
            completion(ring.lastAvailableIndex)
            return
        }
        stopCompletions.append(completion)
        if state == .running || state == .broken { state = .stopping }
        disarmKick()
        finishStopIfQuiet()
    }

    private func finishStopIfQuiet() {
        guard state == .stopping, slots.inUse == 0, !kickArmed, pendingRemovals == 0 else { return }
        releaseBackendIfIdle()
        publishUsed()
        signalGuestIfNeeded()
        state = .stopped
        onThread { thread in
            thread.removePoller(self)
            thread.unregister(handlerID)
            thread.releaseCompletions(completionsNeeded)
        }
        let waiting = stopCompletions
        stopCompletions.removeAll()
        for completion in waiting { completion(ring.lastAvailableIndex) }
    }

    func setCallFD(_ fd: Int32) {
        callFD = fd
    }

    /// Continues taking requests where a pass stopped (see requestsPerPass) or slots ran out.
    public func nextTurn() {
        guard state == .running else { return }
        processAvailable()
    }

    /// The BlockBackend was resumed after a drain: take the requests left in the ring.
    public func resumeAfterDrain() {
        guard state == .running else { return }
        processAvailable()
    }

    // MARK: completions (IOCompletionHandler)

    public func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
        if tag == Self.kickRemovalTag {
            pendingRemovals -= 1
            // ENOENT (not armed yet) or EALREADY (completing right now): try again.
            if result < 0 && kickArmed && state != .running { disarmKick() }
            finishStopIfQuiet()
            return
        }
        if tag & Self.kickTagBit != 0 {
            guard tag & 0xFFFF == kickGeneration & 0xFFFF else { return }  // an old poll's last word
            if flags & IORING_CQE_F_MORE == 0 {
                kickArmed = false
                if state == .running { armKick() } else { finishStopIfQuiet() }
            }
            if result > 0 {
                _ = read(kickFD, &kickBuffer, 8)  // clear the eventfd (non-blocking)
            }
            if state == .running { processAvailable() }
            return
        }
        let slotIndex = Int(tag)
        guard slotIndex < slots.count else { return }
        let request = slots.blockRequest(slotIndex)
        let final = onContext { backend.complete(request, result: result, on: $0) }
        guard let final else { return }
        complete(slot: slotIndex, result: final)
    }

    public func endOfBatch() {
        publishUsed()
        signalGuestIfNeeded()
        // Not processAvailable() here: its completions would schedule another end of batch
        // at once, and a driver that keeps the ring full would never let the thread go.
        if heldBack && state == .running { onThread { $0.scheduleNextTurn(handlerID) } }
        releaseBackendIfIdle()
        finishStopIfQuiet()
    }

    @inline(__always)
    private func signalGuestIfNeeded() {
        guard usedSinceSignal else { return }
        usedSinceSignal = false
        if callFD >= 0 && ring.shouldNotifyGuest() {
            var one: UInt64 = 1
            _ = write(callFD, &one, 8)
        }
    }

    // MARK: polling (IOPoller)

    public func pollForWork() -> Bool {
        guard state == .running, slots.hasFree else { return false }
        let waiting: UInt16
        do {
            waiting = try ring.availableCount()
        } catch {
            markBroken("\(error)")
            return false
        }
        guard waiting > 0 else { return false }
        processAvailable()
        return true
    }

    public var hasRequestsInFlight: Bool { queueInFlight > 0 }

    public func pollingBegins() {
        polling = true
        if state == .running { ring.disableGuestKicks() }
    }

    public func pollingEnds() -> Bool {
        polling = false
        guard state == .running else { return false }
        // Work that arrived while kicks were off would never be kicked for: take it now.
        guard ring.enableGuestKicks() else { return false }
        processAvailable()
        return true
    }

    // MARK: taking requests

    /// Counts a request in. The queue is one user of the BlockBackend from its first
    /// request until the end of the batch in which its last one finished: the atomic
    /// begin/end pair is paid once per busy period, not per request, and in between only
    /// the quiesce flag is read. A drain still waits for every request: the backend's count
    /// stays above zero until the queue lets go (releaseBackendIfIdle).
    @inline(__always)
    private func admitRequest() -> Bool {
        if !holdsBackend {
            guard backend.beginRequest() else { return false }
            holdsBackend = true
        } else if backend.isQuiescing {
            releaseBackendIfIdle()
            return false
        }
        queueInFlight += 1
        return true
    }

    /// Counts a request out (after its completion is on the used ring, or it was not taken).
    @inline(__always)
    private func retireRequest() {
        precondition(queueInFlight > 0, "virtqueue \(index) of export \(device.exportID): request retired twice")
        queueInFlight -= 1
        if queueInFlight == 0 { onThread { $0.scheduleEndOfBatch(handlerID) } }
    }

    private func releaseBackendIfIdle() {
        guard holdsBackend, queueInFlight == 0 else { return }
        holdsBackend = false
        backend.endRequest()
    }

    private func processAvailable() {
        heldBack = false
        var taken = 0
        while state == .running {
            ring.disableGuestKicks()
            while slots.hasFree {
                if taken == Self.requestsPerPass {
                    // Let the first ones start, complete and be published (and the driver be
                    // told) before taking more: the driver refills while the rest are served.
                    // Guest kicks stay off; the thread's next turn comes back here.
                    onThread { $0.scheduleNextTurn(handlerID) }
                    return
                }
                guard admitRequest() else {
                    heldBack = true  // quiesced: resumeAfterDrain brings us back
                    ring.enableGuestKicks_ignoringResult()
                    return
                }
                let head: UInt16?
                do {
                    head = try takeHead()
                } catch {
                    retireRequest()
                    markBroken("\(error)")
                    return
                }
                guard let head else {
                    retireRequest()
                    break
                }
                startRequest(head: head)
                taken += 1
            }
            if !slots.hasFree {
                heldBack = true  // a completion frees a slot and endOfBatch comes back here
                ring.enableGuestKicks_ignoringResult()
                return
            }
            // Ring empty. While the thread polls, it will look again itself; otherwise
            // re-enable kicks, then look once more (the classic race).
            if polling { return }
            if !ring.enableGuestKicks() { return }
        }
    }

    /// The next head: with an inflight region, requests a previous process left in flight
    /// come first and taken heads are marked there.
    @inline(__always)
    private func takeHead() throws(VirtqueueError) -> UInt16? {
        guard let inflight else { return try ring.popAvailable() }
        return try inflight.nextHead(from: &ring)
    }

    @inline(__always)
    private func publishUsed() {
        guard let inflight else { return ring.publishUsed() }
        inflight.publishUsed(&ring)
    }

    /// What walking and parsing one chain gave.
    private enum TakenRequest {
        case parsed(VirtioBlkRequest)
        case corruptChain(VirtqueueError)
        case cannotComplete(VirtioBlkRequestError)
    }

    private func startRequest(head: UInt16) {
        let slot = slots.take()
        let parser = device.parser()
        let taken: TakenRequest = slots.withChain(slot) { chain, buffers in
            do throws(VirtqueueError) {
                try ring.walkChainInPlace(head: head, into: chain)
            } catch {
                return .corruptChain(error)
            }
            do throws(VirtioBlkRequestError) {
                return .parsed(try parser.parse(chain, into: buffers))
            } catch {
                return .cannotComplete(error)
            }
        }
        let parsed: VirtioBlkRequest
        switch taken {
        case .parsed(let request):
            parsed = request
        case .corruptChain(let error):
            slots.release(slot)
            retireRequest()
            markBroken("descriptor chain at head \(head): \(error)")
            return
        case .cannotComplete(let error):
            // Nowhere to write a status: the request can never be completed correctly.
            slots.release(slot)
            retireRequest()
            markBroken("\(error)")
            return
        }
        slots.parsedRequest(slot).pointee = parsed
        let request = slots.blockRequest(slot)
        request.pointee.fua = false
        request.pointee.mayUnmap = false
        switch parsed.operation {
        case .reject(let problem):
            logger.debug("request rejected: \(problem)")
            finish(slot: slot, status: problem.status)
            return
        case .getId:
            _ = device.serial.withUnsafeBytes { parsed.writeDeviceId($0) }
            finish(slot: slot, status: .ok)
            return
        case .read(let sector):
            request.pointee.operation = .read
            request.pointee.offset = sector << 9
            request.pointee.length = UInt64(parsed.dataLength)
        case .write(let sector):
            request.pointee.operation = .write
            request.pointee.offset = sector << 9
            request.pointee.length = UInt64(parsed.dataLength)
            request.pointee.fua = !device.writeCacheEnabled
        case .flush:
            request.pointee.operation = .flush
            request.pointee.offset = 0
            request.pointee.length = 0
        case .discard, .writeZeroes:
            // max_discard_seg = max_write_zeroes_seg = 1: one range per request.
            guard let segment = parsed.segments.first else { finish(slot: slot, status: .ioError); return }
            request.pointee.operation = parsed.operation == .discard ? .discard : .writeZeroes
            request.pointee.offset = segment.sector << 9
            request.pointee.length = UInt64(segment.sectorCount) << 9
            request.pointee.mayUnmap = segment.unmap
        }
        request.pointee.iov = parsed.dataSpans.baseAddress
        request.pointee.iovcnt = Int32(parsed.dataSpans.count)
        switch onContext({ backend.submit(request, on: $0) }) {
        case .queued: break
        case .done(let result): complete(slot: slot, result: result)
        }
    }

    /// A block request finished: map the result to a virtio status and complete.
    private func complete(slot: Int, result: Int32) {
        if result >= 0 {
            finish(slot: slot, status: .ok)
        } else {
            if result != -EIO { logger.debug("request failed: \(String(cString: strerror(-result)))") }
            finish(slot: slot, status: result == -EOPNOTSUPP ? .unsupported : .ioError)
        }
    }

    /// Writes the status byte, puts the chain on the used ring, frees the slot.
    private func finish(slot: Int, status: VirtioBlkStatus) {
        guard let parsed = slots.parsedRequest(slot).pointee else { return }
        parsed.complete(status)
        ring.addUsed(head: parsed.head, writtenLength: parsed.usedLength(for: status))
        slots.release(slot)
        retireRequest()
        usedSinceSignal = true
        onThread { $0.scheduleEndOfBatch(handlerID) }
    }

    private func markBroken(_ why: String) {
        state = .broken
        ring.markBroken()
        logger.error("the guest driver corrupted virtqueue \(index): \(why); the queue is stopped until the guest resets the device")
        disarmKick()
        onBroken?(index, why)
    }
}

extension SplitVirtqueue {
    /// `walkChain` on a ring held in place: `mutating` only so that the ring is passed by
    /// address; a non-mutating call on a ring behind a pointer copies the whole struct
    /// (and retains its GuestMemory) for every request.
    @inline(__always)
    mutating func walkChainInPlace(head: UInt16, into chain: DescriptorChain) throws(VirtqueueError) {
        try walkChain(head: head, into: chain)
    }

    /// Re-enables guest kicks without re-checking (the caller comes back by other means).
    @inline(__always)
    mutating func enableGuestKicks_ignoringResult() { _ = enableGuestKicks() }
}

extension VirtioBlkQueue {
    // MARK: control-thread helpers

    /// Stops the queue on its IOThread and returns its next avail index.
    @ControlActor
    public func stop(on thread: IOThread) async -> UInt16 {
        await withCheckedContinuation { continuation in
            thread.post { _ in self.stop { continuation.resume(returning: $0) } }
        }
    }

    /// Switches the call eventfd on the IOThread; after this returns, the old one is unused.
    @ControlActor
    public func replaceCallFD(_ fd: Int32, on thread: IOThread) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            thread.post { _ in
                self.setCallFD(fd)
                continuation.resume()
            }
        }
    }
}
