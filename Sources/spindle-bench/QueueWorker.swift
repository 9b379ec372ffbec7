import CSpindle
import Synchronization
import VhostUserFrontend

/// The measured window, in CLOCK_MONOTONIC nanoseconds, shared by every queue thread.
struct MeasurementWindow: Sendable {
    let start: UInt64
    let end: UInt64
}

/// What one queue thread counted inside the measured window.
struct QueueResult: Sendable {
    var completed: UInt64 = 0
    var bytes: UInt64 = 0
    /// Completions with a status other than OK (or no status at all).
    var failedRequests: UInt64 = 0
    var firstBadStatus: UInt8?
    var kicks: UInt64 = 0
    /// Times the thread woke from read() on the call eventfd.
    var wakeups: UInt64 = 0
    /// Signals the backend sent on the call eventfd (eventfd counter values summed).
    var callSignals: UInt64 = 0
    var cpuNanoseconds: UInt64 = 0
    /// The thread's own view of the window: first and last batch inside it.
    var windowStart: UInt64 = 0
    var windowEnd: UInt64 = 0
    /// Set if the queue had to stop early (a broken backend).
    var failure: String?
}

/// One queue's thread: keeps `iodepth` requests in flight until the window ends, then
/// drains. Everything it touches is preallocated; the loop makes no allocation, takes no
/// lock and makes only the kick write and (eventfd mode) the call read as syscalls.
final class QueueWorker: @unchecked Sendable {
    let cpu: Int?
    let completion: CompletionMode
    let blockSize: Int
    let window: MeasurementWindow
    /// --fill / --expect: the byte writes carry and reads must return (data checks).
    let fill: UInt8?
    let expect: UInt8?
    private(set) var queue: BlkQueue
    private var generator: WorkloadGenerator
    private(set) var histogram = LatencyHistogram()
    private(set) var result = QueueResult()
    /// Set when the thread has drained its queue (the main thread's watchdog reads it).
    let finished = Atomic<Bool>(false)

    init(queue: BlkQueue, generator: WorkloadGenerator, cpu: Int?, completion: CompletionMode,
         blockSize: Int, window: MeasurementWindow, fill: UInt8? = nil, expect: UInt8? = nil) {
        self.fill = fill
        self.expect = expect
        self.queue = queue
        self.generator = generator
        self.cpu = cpu
        self.completion = completion
        self.blockSize = blockSize
        self.window = window
    }

    deinit {
        histogram.deallocate()
    }

    /// The thread body.
    func run() {
        if let cpu {
            let code = spindle_pin_current_thread(Int32(cpu))
            if code != 0 { result.failure = "cannot pin queue \(queue.index) to CPU \(cpu) (error \(code))" }
        }
        _ = spindle_set_thread_name("bench-q\(queue.index)")
        if result.failure == nil { drive() }
        finished.store(true, ordering: .releasing)
    }

    private enum Phase { case warmUp, measuring, draining }

    private func drive() {
        // Work on locals: no class-property access (and no exclusivity checks) in the loop.
        var queue = self.queue
        var generator = self.generator
        var histogram = self.histogram
        var result = QueueResult()
        let depth = queue.slotCount
        let blockSize = self.blockSize
        let polling = completion == .poll
        let startTimes = UnsafeMutablePointer<UInt64>.allocate(capacity: depth)
        defer { startTimes.deallocate() }
        var phase = Phase.warmUp
        var kicks: UInt64 = 0, wakeups: UInt64 = 0, callSignals: UInt64 = 0
        var cpuAtStart: UInt64 = 0

        let fill = self.fill, expect = self.expect
        let reading = UnsafeMutablePointer<Bool>.allocate(capacity: depth)
        defer { reading.deallocate() }

        if polling { queue.suppressCalls() } else { queue.makeCallBlocking() }
        var now = monotonicNanoseconds()
        for slot in 0..<depth {
            Self.issue(slot, at: now, queue: &queue, generator: &generator, reading: reading, startTimes: startTimes,
                       fill: fill, blockSize: blockSize)
        }
        if queue.publish() { kicks &+= 1 }
        var inFlight = depth

        while inFlight > 0 {
            // Wait for at least one used entry.
            guard var pending = queue.pendingCompletions() else {
                result.failure = "queue \(queue.index): backend broke the used ring (split: used.idx moved by more than the ring size; packed: a used descriptor names an id not in flight)"
                break
            }
            if pending == 0 {
                if polling {
                    // The count that ends the spin is the batch's: a packed ring counts by
                    // walking its used descriptors, so counting twice cost a second walk.
                    repeat { pending = queue.pendingCompletions() ?? -1 } while pending == 0
                } else {
                    while !queue.requestCallOnNextCompletion() {
                        let signals = queue.waitForCall()
                        wakeups &+= 1
                        callSignals &+= signals
                    }
                    pending = queue.pendingCompletions() ?? -1
                }
                guard pending > 0 else {
                    result.failure = "queue \(queue.index): backend broke the used ring (split: used.idx moved by more than the ring size; packed: a used descriptor names an id not in flight)"
                    break
                }
            }
            now = monotonicNanoseconds()

            // Window bookkeeping, once per batch.
            if phase == .warmUp, now >= window.start {
                phase = .measuring
                result.windowStart = now
                cpuAtStart = threadCPUNanoseconds()
                kicks = 0; wakeups = 0; callSignals = 0
                if polling { _ = queue.takePendingCalls() }
            }
            if phase == .measuring, now >= window.end {
                phase = .draining
                result.windowEnd = now
                result.cpuNanoseconds = threadCPUNanoseconds() &- cpuAtStart
                result.kicks = kicks
                result.wakeups = wakeups
                result.callSignals = polling ? queue.takePendingCalls() : callSignals
            }

            // Harvest, then reuse each slot at once unless the window is over.
            var broken = false
            for _ in 0..<pending {
                let entry = queue.takeCompletion()
                guard let slot = queue.slot(forUsedID: entry.id) else {
                    result.failure = "queue \(queue.index): backend returned descriptor id \(entry.id), which is no request head"
                    broken = true
                    break
                }
                let status = queue.status(of: slot)
                if status != BlkStatus.ok {
                    result.failedRequests &+= 1
                    if result.firstBadStatus == nil { result.firstBadStatus = status }
                } else if let expect, reading[slot] {
                    let bytes = UnsafeRawBufferPointer(start: queue.data(of: slot), count: blockSize)
                    if bytes.contains(where: { $0 != expect }) { result.failedRequests &+= 1 }
                }
                if phase == .measuring {
                    histogram.record(now &- startTimes[slot])
                    result.completed &+= 1
                }
                if phase == .draining {
                    inFlight -= 1
                } else {
                    Self.issue(slot, at: now, queue: &queue, generator: &generator, reading: reading, startTimes: startTimes,
                               fill: fill, blockSize: blockSize)
                }
            }
            if broken { break }
            if polling { queue.suppressCalls() }
            if queue.publish() { kicks &+= 1 }
        }
        if phase != .draining, result.failure == nil {
            result.failure = "queue \(queue.index): the run ended before the measured window did"
        }
        result.bytes = result.completed &* UInt64(blockSize)
        self.queue = queue
        self.generator = generator
        self.histogram = histogram
        self.result = result
    }

    /// Prepares and submits the next request in `slot`. A static function taking the loop's
    /// locals `inout`, not a nested function capturing them: captured, they were boxed, and
    /// every access paid a dynamic exclusivity check and a copy of the queue (~300
    /// instructions per request, more than the ring work being measured).
    @inline(__always)
    static func issue(_ slot: Int, at now: UInt64, queue: inout BlkQueue, generator: inout WorkloadGenerator,
                              reading: UnsafeMutablePointer<Bool>, startTimes: UnsafeMutablePointer<UInt64>,
                              fill: UInt8?, blockSize: Int) {
        let request = generator.next()
        if request.type == .discard || request.type == .writeZeroes {
            // One segment covering the block: sector, sector count, flags (0: no unmap).
            let segment = queue.data(of: slot)
            segment.storeBytes(of: request.sector.littleEndian, as: UInt64.self)
            segment.storeBytes(of: UInt32(blockSize / 512).littleEndian, toByteOffset: 8, as: UInt32.self)
            segment.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
            queue.prepare(slot: slot, type: request.type, sector: 0, byteCount: 16)
        } else {
            queue.prepare(slot: slot, type: request.type, sector: request.sector, byteCount: blockSize)
        }
        reading[slot] = request.type == .read
        if let fill, request.type == .write { queue.data(of: slot).initializeMemory(as: UInt8.self, repeating: fill, count: blockSize) }
        startTimes[slot] = now
        queue.submit(slot: slot)
    }
}
