import CSpindle
import Glibc
import IOThreads
import Logging
import Synchronization
import VhostUser

/// One virtqueue served on one IOThread, for any ring layout and any device: it waits for
/// guest kicks (a multishot poll on the kick eventfd in the IOThread's io_uring) or polls the
/// ring while the thread's polling window is open (a ring without a kick eventfd, set up with
/// VHOST_USER_VRING_NOFD_MASK, is polled on a timer instead: see `kicklessPollInterval`), takes requests off the ring into
/// preallocated slots (admitted through the handler's backend accounting), has the device's
/// `Handler` start them, puts finished ones on the used ring (with the inflight region kept
/// up to date), and signals the call eventfd once per batch and only when the driver asked.
///
/// A device subclasses it once with its layout and handler, and declares the subclass an
/// `IOCompletionHandler & IOPoller` (the methods are here): the conformance, and with it
/// the whole hot path, is then compiled in the device's module, specialised for the layout
/// and the handler (everything below is `@inlinable` for that; no witness-table call, no
/// existential, no reference counting per request).
///
/// Built on the control thread, then owned by its IOThread: every method but the
/// constructor and the `async` control helpers runs there.
open class VirtqueueServer<Ring: VirtqueueRing, Handler: VirtqueueRequestHandler>: @unchecked Sendable {
    public final let index: Int
    /// The device's side (request meaning, per-slot state, admission).
    public final let handler: Handler
    /// The ring lives behind a pointer so calls on it work in place: a struct stored in a
    /// class property is copied (retaining its GuestMemory) for every non-mutating call.
    @usableFromInline final let ringStorage: UnsafeMutablePointer<Ring>
    @usableFromInline final var ring: Ring {
        unsafeAddress { UnsafePointer(ringStorage) }
        unsafeMutableAddress { ringStorage }
    }
    /// -1 for a ring the frontend set up without one (NOFD): polled on a timer.
    @usableFromInline final let kickFD: Int32
    /// The timer's interval for a kick-less ring, allocated only for one (the kernel reads
    /// it when the timeout SQE is submitted, so it needs a stable address).
    @usableFromInline final let kicklessTimeout: UnsafeMutablePointer<__kernel_timespec>?
    @usableFromInline final var callFD: Int32
    /// Built on the IOThread in `start`, so that its memory is first touched there and lands
    /// on that thread's NUMA node.
    @usableFromInline final var slots = VirtqueueSlots(count: 0, spansPerRequest: 1)
    @usableFromInline final let slotCount: Int
    /// Spans each slot holds itself; a chain beyond that borrows a `SpanBlockPool` block of
    /// `longChainSpans` while in flight (0: the ring cannot read or take a chain again, see
    /// `VirtqueueRingRereadable`; every slot holds the longest chain).
    @usableFromInline final let inlineSpans: Int
    @usableFromInline final let longChainSpans: Int
    /// The slot whose long chain waits for a span block (-1: none). It holds its head and
    /// counts as in flight (a packed queue's stays free: its buffer waits in the ring); no
    /// further request is taken until it has started.
    @usableFromInline final var parkedSlot = -1
    /// Slots whose chain holds a borrowed span block now.
    @usableFromInline final var slotsWithSpanBlocks = 0
    /// Bytes of request bookkeeping the running queue holds (its slots; 0 when stopped).
    /// Any thread may read it.
    public final let memoryBytes = Atomic<Int>(0)
    @usableFromInline final let logger: Logger
    /// The queue's inflight region (INFLIGHT_SHMFD), when the frontend shared one: kept
    /// alive by `inflight`, lent on the hot path through `inflightRef` (binding the optional
    /// costs a retain/release pair per request).
    public final let inflight: Ring.InflightRegion?
    @usableFromInline final let inflightRef: Unmanaged<Ring.InflightRegion>?

    /// The IOThread and its ring, set in `start`. Held unretained and lent through
    /// `onThread`/`onContext`: even an unowned(unsafe) reference is retained around every
    /// call, which on the hot path costs a retain/release pair per request.
    @usableFromInline final var threadRef: Unmanaged<IOThread>?
    @usableFromInline final var contextRef: Unmanaged<IOContext>?
    @usableFromInline final var handlerID = IOThread.ignoredHandler

    @usableFromInline enum State { case idle, running, stopping, stopped, broken }
    @usableFromInline final var state = State.idle
    /// Requests taken and not yet retired, and whether the queue counts as one in-flight
    /// user of the handler's backend (see `admitRequest`).
    @usableFromInline final var queueInFlight = 0
    @usableFromInline final var inBusyPeriod = false
    /// Requests wait in the ring because the backend is quiesced or slots ran out.
    @usableFromInline final var heldBack = false
    @usableFromInline final var kickArmed = false
    @usableFromInline final var kickGeneration: UInt64 = 0
    @usableFromInline final var kickBuffer: UInt64 = 0
    /// Poll removals submitted and not yet completed: the queue stops only after they are in.
    @usableFromInline final var pendingRemovals = 0
    /// Everyone waiting for the stop (a move and a GET_VRING_BASE may both ask).
    @usableFromInline final var stopCompletions: [@Sendable (UInt32) -> Void] = []
    @usableFromInline final var usedSinceSignal = false
    /// The IOThread is busy-polling this queue: leave guest kicks off until it stops.
    @usableFromInline final var polling = false
    /// The dirty log this queue marks (live migration); `.off` unless the frontend asked for
    /// logging and shared a log. Set before `start`, then only on the IOThread.
    @usableFromInline final var dirtyLog = VirtqueueDirtyLog.off
    /// Pages the device wrote that lay beyond the log (reported once).
    @usableFromInline final var dirtyLogMissedPages: UInt64 = 0
    /// Called on the IOThread, once, when the guest corrupted this ring (the queue has
    /// stopped taking requests); the connection then tells the frontend. Set before `start`.
    public final var onBroken: (@Sendable (_ queueIndex: Int, _ reason: String) -> Void)?

    /// Most requests taken off the ring before the IOThread submits them and publishes what
    /// completed: the driver hears of its first completions after 8 requests, not after the
    /// whole ring (QEMU notifies per request; suppression by EVENT_IDX keeps that cheap).
    @inlinable public static var requestsPerPass: Int { 8 }

    /// How often (ns) the IOThread comes back to a ring that has no kick eventfd: a one-shot
    /// io_uring timeout stands in for the kick poll and is re-armed when it fires. Its cost:
    /// while such a ring runs, its IOThread wakes up to 4 000 times a second even when idle,
    /// and a request may wait up to 250 µs before it is seen (unless the thread is
    /// busy-polling anyway). Longer than the default poll-max-ns (100 µs) on purpose: the
    /// timer's wakeups then do not grow the adaptive poll window into a spin. Kicked rings
    /// never arm it.
    @inlinable public static var kicklessPollInterval: Int64 { 250_000 }

    /// Most CQEs outstanding at once, reserved on the IOThread's ring: one per slot (a request
    /// has one SQE in flight at a time; an x-delay hold's timeout stands in for it), the kick
    /// poll's CQE and its last one (a multishot poll whose CQE finds no room ends instead),
    /// and two poll removals.
    @usableFromInline final var completionsNeeded: Int { slotCount + 4 }

    /// `slotCount`: requests in flight at most (capped at the ring size). `logger` names the
    /// export and queue in its metadata.
    public init(index: Int, ring: Ring, handler: Handler, kickFD: Int32, callFD: Int32, slotCount: Int,
                inflight: Ring.InflightRegion?, logger: Logger) {
        // Clearing the kick eventfd must never block the IOThread, whatever flags the frontend
        // created it with (qemu-storage-daemon does the same; writers never block on eventfds).
        if kickFD >= 0 {
            let flags = fcntl(kickFD, F_GETFL)
            if flags >= 0 && flags & O_NONBLOCK == 0 { _ = fcntl(kickFD, F_SETFL, flags | O_NONBLOCK) }
            kicklessTimeout = nil
        } else {
            kicklessTimeout = .allocate(capacity: 1)
            kicklessTimeout?.initialize(to: __kernel_timespec(tv_sec: 0, tv_nsec: Self.kicklessPollInterval))
        }
        self.index = index
        self.handler = handler
        ringStorage = .allocate(capacity: 1)
        ringStorage.initialize(to: ring)
        self.kickFD = kickFD
        self.callFD = callFD
        self.slotCount = min(Int(ring.size), slotCount)
        let longest = handler.spansPerRequest
        if Ring.self is any VirtqueueRingRereadable.Type,
           DescriptorChain.storageSpans(capacity: longest) <= SpanBlockPool.spansPerBlock {
            inlineSpans = max(1, min(handler.inlineSpansPerRequest, longest))
            longChainSpans = inlineSpans < longest ? longest : 0
        } else {
            inlineSpans = longest
            longChainSpans = 0
        }
        self.inflight = inflight
        inflightRef = inflight.map { .passUnretained($0) }
        self.logger = logger
    }

    deinit {
        let bytes = memoryBytes.load(ordering: .relaxed)
        if bytes != 0 { handler.queueMemoryChanged(by: -bytes) }  // dropped without a stop
        kicklessTimeout?.deallocate()
        slots.deallocate()
        ringStorage.deinitialize(count: 1)
        ringStorage.deallocate()
    }

    @inlinable @inline(__always)
    final func onThread<R>(_ body: (IOThread) -> R) -> R {
        threadRef.unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
    }

    @inlinable @inline(__always)
    final func onContext<R>(_ body: (IOContext) -> R) -> R {
        contextRef.unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
    }

    /// The subclass as the IOThread sees it (cast once per start and stop, never per request).
    final var asThreadClient: any IOCompletionHandler & IOPoller {
        guard let client = self as? any IOCompletionHandler & IOPoller else {
            preconditionFailure("\(type(of: self)) must declare IOCompletionHandler and IOPoller (see VirtqueueServer)")
        }
        return client
    }

    // MARK: lifecycle (on the IOThread)

    /// Starts serving the queue on `thread` (call it there). A queue whose completions do not
    /// fit the thread's ring is refused (`onBroken`), never started.
    public final func start(on thread: IOThread) {
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
        let client = asThreadClient
        handlerID = thread.register(client)
        thread.addPoller(client)
        slots.deallocate()
        slots = VirtqueueSlots(count: slotCount, spansPerRequest: inlineSpans)
        handler.prepare(slotCount: slotCount, handlerID: handlerID)
        let bytes = slots.allocatedBytes + slotCount * handler.memoryBytesPerSlot
        memoryBytes.store(bytes, ordering: .relaxed)
        handler.queueMemoryChanged(by: bytes)
        state = .running
        armKick()
        processAvailable()
    }

    /// Stops taking requests; `completion` gets the ring's base (GET_VRING_BASE's value) once
    /// every in-flight request has completed and the kick poll is gone. Then the queue is
    /// unregistered.
    public final func stop(completion: @escaping @Sendable (UInt32) -> Void) {
        if state == .stopped {
            completion(ring.vringBase)
            return
        }
        stopCompletions.append(completion)
        if state == .running || state == .broken { state = .stopping }
        disarmKick()
        finishStopIfQuiet()
    }

    @inlinable @inline(__always)
    final func finishStopIfQuiet() {
        guard state == .stopping, slots.inUse == 0, !kickArmed, pendingRemovals == 0 else { return }
        finishStop()
    }

    @usableFromInline
    final func finishStop() {
        endBusyPeriodIfIdle()
        publishUsed()
        // Before the base is reported (GET_VRING_BASE): the whole used ring, with the kick
        // suppression fields written outside any publish.
        if let bitmap = dirtyLog.bitmap, let address = dirtyLog.usedRingGuestAddress {
            noteDirtyLogMisses(ring.logDeviceArea(at: address, in: bitmap))
        }
        signalGuestIfNeeded()
        state = .stopped
        // Nothing is in flight: give the slots' memory back now, not when the session
        // lets go of the queue (a frontend that is gone should not keep its high-water mark).
        slots.deallocate()
        slots = VirtqueueSlots(count: 0, spansPerRequest: 1)
        handler.discardSlots()
        handler.queueMemoryChanged(by: -memoryBytes.exchange(0, ordering: .relaxed))
        let client = asThreadClient
        onThread { thread in
            thread.removePoller(client)
            thread.unregister(handlerID)
            thread.releaseCompletions(completionsNeeded)
            thread.trimSpanBlocks()
        }
        let waiting = stopCompletions
        stopCompletions.removeAll()
        for completion in waiting { completion(ring.vringBase) }
    }

    final func setCallFD(_ fd: Int32) {
        callFD = fd
    }

    /// The backend was resumed after a drain: take the requests left in the ring.
    @inlinable
    public final func resumeAfterDrain() {
        guard state == .running else { return }
        processAvailable()
    }

    /// Marks the queue broken after a driver error: no more requests are taken, the
    /// in-flight ones still complete, and `onBroken` tells the connection.
    @usableFromInline
    final func markBroken(_ why: String) {
        state = .broken
        ring.markBroken()
        logger.error("the guest driver corrupted virtqueue \(index): \(why); the queue is stopped until the guest resets the device")
        disarmKick()
        onBroken?(index, why)
    }
}
