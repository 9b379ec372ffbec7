import ControlThread
import CSpindle
import Glibc
import Logging
import Synchronization

/// A plain thread with its own io_uring: it sleeps in io_uring_submit_and_wait until a CQE
/// arrives (a guest kick through a poll SQE, a finished read or write, or work posted from
/// the control thread through its inbox eventfd), dispatches each CQE to the handler its
/// token names, then lets handlers finish the batch (publish used entries, signal once).
///
/// Created and stopped by the control thread; everything else happens on the thread itself.
public final class IOThread: @unchecked Sendable {
    public let id: String
    /// The CPU it is pinned to, if any.
    public let cpu: Int?
    public let context: IOContext

    private static let maxHandlers = 4096
    private static let inboxHandler = HandlerID(index: 0, generation: 0)
    /// A handler id never given out: CQEs nobody needs to see (e.g. of a poll removal).
    public static let ignoredHandler = HandlerID(index: UInt16(maxHandlers - 1), generation: 0)

    // Thread-confined state (only the IOThread touches these after start).
    /// Retained at register, released after unregister (see HandlerBox).
    private let handlers: UnsafeMutablePointer<Unmanaged<HandlerBox>?>
    /// Boxes of handlers unregistered since the loop last came round: one may be unregistered
    /// from its own call, which must not free it (nothing else may hold it) while it runs.
    private var retiredHandlers: [HandlerBox] = []
    /// Each handler slot's current generation (see HandlerID), bumped when it is unregistered.
    private let generations: UnsafeMutablePointer<UInt16>
    private var freeHandlerIDs: [UInt16]
    private let batchEnds: HandlerSchedule
    let nextTurns: HandlerSchedule
    /// Storage for long descriptor chains, lent per request (IOThread+SpanBlocks.swift).
    public let spanBlocks: SpanBlockPool
    /// Handlers waiting for a span block.
    let spanBlockWaiters: HandlerSchedule
    private var stopping = false
    private let pollers: PollerList
    private(set) var pollWindow: PollWindow
    /// The pollers were told polling began and not yet that it ended: a poll that found work
    /// leaves them so until a poll finds none or the thread does not poll (`endPolling`).
    private var pollersPolling = false
    /// Statistics for query-iothreads, written by the thread, read by the control thread.
    let pollHitCount = Atomic<UInt64>(0)
    let pollMissCount = Atomic<UInt64>(0)
    let sleepCount = Atomic<UInt64>(0)
    /// Nanoseconds spent asleep in the kernel and busy-polling, and when the loop began: the
    /// rest of its life was work (written by the thread only, read by anyone).
    let sleepNs = Atomic<UInt64>(0)
    let pollNs = Atomic<UInt64>(0)
    let startedNs = Atomic<UInt64>(0)
    let pollYieldCount = Atomic<UInt64>(0)
    let pollWindowNs = Atomic<UInt64>(0)

    // Cross-thread inbox.
    private let inboxFD: Int32
    private let inboxBuffer: UnsafeMutablePointer<UInt64>
    private let inbox = PosixMutex<[@Sendable (IOThread) -> Void]>([])

    /// Sleep in poll(2) on the ring's fd instead of in io_uring_enter: only for profiling
    /// under valgrind 3.19, which keeps its global lock across io_uring_enter and so freezes
    /// every other thread of the process while an IOThread sleeps there (`x-sleep=poll`).
    public let sleepsInPoll: Bool

    private var thread = pthread_t()
    private let owner = ThreadOwner()
    private let tid = Atomic<Int32>(0)
    private let logger: Logger

    @ControlActor
    public init(id: String, cpu: Int?, pollMaxNs: UInt64 = IOThread.defaultPollMaxNs, pollGrow: UInt64 = 0,
                pollShrink: UInt64 = 0, ringEntries: UInt32 = 1024, sleepsInPoll: Bool = false,
                maxSpanBlocks: Int = SpanBlockPool.defaultMaxBlocks) throws(IOContextError) {
        self.id = id
        self.sleepsInPoll = sleepsInPoll
        self.cpu = cpu
        self.pollWindow = PollWindow(maxNs: pollMaxNs, grow: pollGrow, shrink: pollShrink)
        self.context = try IOContext(entries: ringEntries, completionEntries: ringEntries * Self.completionsPerSubmission)
        _ = context.reserveCompletions(1)  // the inbox's read
        handlers = .allocate(capacity: Self.maxHandlers)
        handlers.initialize(repeating: nil, count: Self.maxHandlers)
        generations = .allocate(capacity: Self.maxHandlers)
        generations.initialize(repeating: 0, count: Self.maxHandlers)
        batchEnds = HandlerSchedule(handlers: Self.maxHandlers, listCapacity: Self.maxHandlers, what: "IOThread \(id), end of batch")
        nextTurns = HandlerSchedule(handlers: Self.maxHandlers, listCapacity: 2 * Self.maxHandlers, what: "IOThread \(id), next turn")
        spanBlocks = SpanBlockPool(maxBlocks: maxSpanBlocks)
        pollers = PollerList(capacity: Self.maxHandlers, what: "IOThread \(id)")
        spanBlockWaiters = HandlerSchedule(handlers: Self.maxHandlers, listCapacity: 2 * Self.maxHandlers, what: "IOThread \(id), span block waiters")
        freeHandlerIDs = (1..<Self.ignoredHandler.index).reversed()
        inboxFD = eventfd(0, Int32(EFD_CLOEXEC))
        inboxBuffer = .allocate(capacity: 1)
        var logger = Logger(label: "spindle.iothread")
        logger[metadataKey: "iothread"] = "\(id)"
        self.logger = logger
    }

    deinit {
        for index in 0..<Self.maxHandlers { handlers[index]?.release() }
        handlers.deinitialize(count: Self.maxHandlers)
        handlers.deallocate()
        generations.deallocate()
        inboxBuffer.deallocate()
        close(inboxFD)
    }

    /// The completion queue's size, in SQ sizes: room for 62 virtqueues of 256 requests on
    /// one thread with the default 1024-entry SQ (see IOContext on reserving CQ entries).
    public static let completionsPerSubmission: UInt32 = 16

    /// Default poll-max-ns: 100 µs, where QEMU uses 32 µs. A cross-CPU eventfd wakeup takes
    /// 40 µs one way on the VMs we measured (bench/results/polling-window.md), so a 32 µs window
    /// always closes before the frontend's next batch arrives and the thread sleeps every time.
    public static let defaultPollMaxNs: UInt64 = 100_000

    /// The kernel thread id, once running (for affinity checks and logs).
    public var threadID: Int32 { tid.load(ordering: .acquiring) }

    // MARK: lifecycle (control thread)

    @ControlActor
    public func start() {
        ControlActor.preconditionOnControlThread("IOThread.start")
        thread = PlainThread.spawn { [self] in self.run() }
        while tid.load(ordering: .acquiring) == 0 { sched_yield() }
    }

    /// Asks the thread to finish and waits for it. Handlers must be unregistered first.
    @ControlActor
    public func stop() {
        ControlActor.preconditionOnControlThread("IOThread.stop")
        post { $0.stopping = true }
        pthread_join(thread, nil)
    }

    // MARK: cross-thread

    /// Runs `work` on the IOThread soon. Callable from any thread; allocates (control path only).
    public func post(_ work: @escaping @Sendable (IOThread) -> Void) {
        inbox.withLock { $0.append(work) }
        var one: UInt64 = 1
        _ = write(inboxFD, &one, 8)
    }

    // MARK: on the IOThread

    /// True on this IOThread (and before it runs).
    public var isCurrent: Bool { owner.isCurrent }

    /// Traps in debug builds when called off this IOThread (once it runs); compiled out of
    /// release builds. For the thread's own methods below and for handlers' entry points.
    @inline(__always)
    public func assertOnThread(file: StaticString = #fileID, line: UInt = #line) {
        owner.assertOwned("IOThread \(id)", file: file, line: line)
    }

    /// Registers a handler; CQEs whose token carries the returned id go to it.
    public func register(_ handler: any IOCompletionHandler) -> HandlerID {
        assertOnThread()
        guard let index = freeHandlerIDs.popLast() else {
            fatalError("IOThread \(self.id): more than \(Self.maxHandlers) completion handlers")
        }
        handlers[Int(index)] = .passRetained(HandlerBox(handler))
        return HandlerID(index: index, generation: generations[Int(index)])
    }

    /// Unregisters a handler. Its outstanding CQEs, if any arrive later, are dropped (their
    /// generation no longer matches, even once the slot serves another handler).
    public func unregister(_ id: HandlerID) {
        assertOnThread()
        let index = Int(id.index)
        precondition(handlers[index] != nil && generations[index] == id.generation,
                     "IOThread \(self.id): \(id) unregistered twice, or never registered")
        retiredHandlers.append(handlers[index].unsafelyUnwrapped.takeRetainedValue())
        handlers[index] = nil
        generations[index] &+= 1
        batchEnds.forget(id.index)
        nextTurns.forget(id.index)
        spanBlockWaiters.forget(id.index)
        freeHandlerIDs.append(id.index)
    }

    /// Adds a poller: while the adaptive window is open the thread spins on it instead of sleeping.
    public func addPoller(_ poller: any IOPoller) {
        assertOnThread()
        pollers.add(poller)
    }

    public func removePoller(_ poller: any IOPoller) {
        assertOnThread()
        pollers.remove(poller)
    }

    /// Asks for the handler's endOfBatch once the current batch of CQEs is done.
    @inline(__always)
    public func scheduleEndOfBatch(_ id: HandlerID) {
        assertOnThread()
        batchEnds.add(id.index)
    }

    /// Asks for the handler's nextTurn on the loop's next iteration, which then does not
    /// sleep: the thread first submits what is queued and reaps what completed.
    @inline(__always)
    public func scheduleNextTurn(_ id: HandlerID) {
        assertOnThread()
        nextTurns.add(id.index)
    }

    private func runNextTurns() {
        // Handlers that schedule themselves again run on the turn after this one.
        nextTurns.callEach(includingAdded: false) { index in
            handlers[Int(index)]?._withUnsafeGuaranteedRef { $0.handler.nextTurn() }
        }
    }

    private func run() {
        if let cpu {
            let rc = spindle_pin_current_thread(Int32(cpu))
            if rc != 0 { logger.warning("cannot pin IOThread \(id) to CPU \(cpu): \(String(cString: strerror(rc)))") }
        }
        _ = spindle_set_thread_name("iot-\(id)")
        owner.bindToCurrentThread()
        context.bindToCurrentThread()
        startedNs.store(monotonicNanoseconds(), ordering: .relaxed)
        tid.store(spindle_gettid(), ordering: .releasing)
        armInbox()
        let ring = context.ring
        let batchCapacity = 256
        let cqes = UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>.allocate(capacity: batchCapacity)
        defer { cqes.deallocate() }
        while !stopping {
            if !retiredHandlers.isEmpty { retiredHandlers.removeAll() }
            let turnsWaiting = nextTurns.count > 0
            if turnsWaiting {
                // Work was left for this turn: start what is queued and reap, but do not sleep.
                _ = io_uring_submit(ring)
                context.beginBatch()
            } else if !pollOnce(ring) {
                let before = monotonicNanoseconds()
                let rc = sleepsInPoll ? sleepInPoll(ring) : io_uring_submit_and_wait(ring, 1)
                if rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY {
                    logger.error("io_uring_submit_and_wait failed: \(String(cString: strerror(-rc)))")
                }
                sleepCount.wrappingAdd(1, ordering: .relaxed)
                let woke = monotonicNanoseconds()
                let blocked = woke &- before
                context.beginBatch(at: woke)  // the clock read the sleep accounting makes anyway
                sleepNs.store(sleepNs.load(ordering: .relaxed) &+ blocked, ordering: .relaxed)  // one writer
                pollWindow.record(blockedNs: blocked)
                pollWindowNs.store(pollWindow.currentNs, ordering: .relaxed)
            }
            while true {
                let n = Int(io_uring_peek_batch_cqe(ring, cqes, UInt32(batchCapacity)))
                if n == 0 { break }
                for i in 0..<n {
                    let cqe = cqes[i]!
                    let token = CompletionToken(rawValue: cqe.pointee.user_data)
                    let result = cqe.pointee.res, flags = cqe.pointee.flags
                    // Free the entry before its handler runs: a request it resubmits (or a
                    // new one in its slot) may complete at once, within the slot's reservation.
                    io_uring_cq_advance(ring, 1)
                    dispatch(token, result: result, flags: flags)
                }
                if n < batchCapacity { break }
            }
            finishBatch()
            if turnsWaiting {
                runNextTurns()
                finishBatch()
            }
        }
        _ = io_uring_submit(ring)
    }

    private func sleepInPoll(_ ring: UnsafeMutablePointer<io_uring>) -> Int32 {
        let submitted = io_uring_submit(ring)
        if submitted < 0 { return submitted }
        var ready = pollfd(fd: ring.pointee.ring_fd, events: Int16(POLLIN), revents: 0)
        while io_uring_cq_ready(ring) == 0 && poll(&ready, 1, -1) < 0 && errno == EINTR {}
        return 0
    }

    /// Busy-polls for up to the current window: true if work or completions turned up (the
    /// caller then reaps without sleeping), false if the thread should sleep.
    private func pollOnce(_ ring: UnsafeMutablePointer<io_uring>) -> Bool {
        let window = pollWindow.currentNs
        // Not polling this time (the thread sleeps next): the pollers must ask for guest kicks
        // again if a previous poll that found work left them polling.
        guard window > 0, !pollers.isEmpty else { return endPolling() }
        // Requests that other threads complete (rbd) are in flight: sleep instead. Spinning
        // took a CPU from librbd's threads and cost more per request than it saved
        // (bench/results/2026-12-07-rbd-threads.md).
        guard context.offRingRequestsInFlight == 0 else { return endPolling() }
        _ = io_uring_submit(ring)
        pollers.forEach { $0.pollingBegins() }
        pollersPolling = true
        let began = monotonicNanoseconds()
        let deadline = began &+ window
        var found = false
        var now = began
        repeat {
            // Requests found on this spin share the clock read that ended the previous one.
            context.beginBatch(at: now)
            if io_uring_cq_ready(ring) > 0 { found = true; break }
            var waitingOnKernel = false
            pollers.forEach { poller in
                if poller.pollForWork() {
                    found = true
                } else if poller.hasRequestsInFlight {
                    waitingOnKernel = true
                }
            }
            if found { break }
            // The kernel may need this CPU to finish them: io_uring hands buffered writes on
            // ext4 to worker threads, which inherit the IOThread's CPU. Spinning here would keep
            // a worker off the CPU until the scheduler preempts us (a long tail of slow writes).
            if waitingOnKernel {
                sched_yield()
                pollYieldCount.wrappingAdd(1, ordering: .relaxed)
            }
            now = monotonicNanoseconds()
        } while now < deadline
        // Work found: the thread comes straight back here without sleeping, so guest kicks stay
        // off (asking for them and taking that back around every request at QD 1 let the
        // driver kick in between, bench/results/2026-12-07-packed-vs-split-paired.md). Only a
        // poll that found nothing, after which the thread sleeps, asks for them again.
        if !found && endPolling() { found = true }
        let ended = monotonicNanoseconds()
        pollNs.store(pollNs.load(ordering: .relaxed) &+ (ended &- began), ordering: .relaxed)  // one writer
        context.beginBatch(at: ended)  // for the completions reaped next
        if found {
            pollHitCount.wrappingAdd(1, ordering: .relaxed)
        } else {
            pollMissCount.wrappingAdd(1, ordering: .relaxed)
        }
        // Work handled while polling may have queued SQEs and completion batches.
        finishBatch()
        return found || io_uring_cq_ready(ring) > 0
    }

    /// Tells the pollers that the thread stops polling and may sleep next (they ask the guest
    /// for kicks again); true if work arrived meanwhile (then the thread must not sleep).
    private func endPolling() -> Bool {
        guard pollersPolling else { return false }
        pollersPolling = false
        var found = false
        pollers.forEach { if $0.pollingEnds() { found = true } }
        return found
    }

    @inline(__always)
    private func dispatch(_ token: CompletionToken, result: Int32, flags: UInt32) {
        let id = token.handler
        if id == Self.inboxHandler {
            runInbox()
            return
        }
        // A late CQE of an unregistered handler: its slot may serve another handler now.
        guard generations[Int(id.index)] == id.generation else { return }
        handlers[Int(id.index)]?._withUnsafeGuaranteedRef {
            $0.handler.handleCompletion(tag: token.tag, result: result, flags: flags)
        }
    }

    private func finishBatch() {
        // endOfBatch may schedule more (it is allowed to), so walk until the list is empty.
        batchEnds.callEach(includingAdded: true) { index in
            handlers[Int(index)]?._withUnsafeGuaranteedRef { $0.handler.endOfBatch() }
        }
    }

    @inline(__always)
    func monotonicNanoseconds() -> UInt64 { IOContext.monotonicNanoseconds() }

    private func armInbox() {
        guard let sqe = context.sqe() else { return }
        io_uring_prep_read(sqe, inboxFD, inboxBuffer, 8, 0)
        sqe.pointee.user_data = CompletionToken(handler: Self.inboxHandler, tag: 0).rawValue
    }

    private func runInbox() {
        let work = inbox.withLock { queue -> [@Sendable (IOThread) -> Void] in
            let taken = queue
            queue.removeAll()
            return taken
        }
        for item in work { item(self) }
        if !stopping { armInbox() }
    }
}
