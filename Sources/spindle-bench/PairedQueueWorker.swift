import CSpindle
import Synchronization
import VhostUserFrontend

/// One device of a paired run: its queue, its request stream, and what the thread counted on
/// it over the measured slices.
struct PairedDevice {
    /// "A" (--socket) or "B" (--pair-socket), with the socket, for error lines.
    let label: String
    var queue: BlkQueue
    var generator: WorkloadGenerator
    var histogram = LatencyHistogram()
    /// Totals over the measured slices. `windowStart` stays 0 and `windowEnd` is the summed
    /// duration of the slices, so `completed / (windowEnd - windowStart)` is the device's IOPS.
    var result = QueueResult()
}

/// What the slice loop needs besides the device: the same for every slice of a run.
struct SliceContext {
    let polling: Bool
    let blockSize: Int
    let fill: UInt8?
    let expect: UInt8?
    /// Per slot (both devices have --iodepth slots; a slice ends with its ring drained, so
    /// the two take turns with these).
    let startTimes: UnsafeMutablePointer<UInt64>
    let reading: UnsafeMutablePointer<Bool>
}

/// The thread of a paired run (--pair-socket): two devices, one queue each, driven by one
/// thread on one CPU in alternating slices, so that both are measured under the same host
/// placement of the VM's vCPUs (which on this VM changes the speed of a whole run by up to
/// 2x, bench/results/2026-12-07-packed-vs-split.md). A slice fills one ring to its depth,
/// keeps it full until the slice's time is up, then drains it: every request submitted in a
/// slice completes in it, and the other device is idle meanwhile. After the warm-up the
/// slices come in pairs A B, B A, A B, ... (each device first in every other pair, so neither
/// always follows the other); each pair gives one ratio, B's rate over A's.
///
/// The unpaired QueueWorker's loop is left as it was (its `issue` is shared): the slice loop
/// below is its copy with a slice end in place of the window end.
final class PairedQueueWorker: @unchecked Sendable {
    let cpu: Int?
    let completion: CompletionMode
    let blockSize: Int
    let window: MeasurementWindow
    let sliceNanoseconds: UInt64
    let fill: UInt8?
    let expect: UInt8?
    private(set) var first: PairedDevice
    private(set) var second: PairedDevice
    /// B's rate over A's for every measured pair of slices, in order.
    private(set) var ratios: [Double] = []
    /// Set if the run had to stop early (a broken backend, pinning refused).
    private(set) var failure: String?
    /// Set when the thread has drained both queues (the main thread's watchdog reads it).
    let finished = Atomic<Bool>(false)

    init(first: PairedDevice, second: PairedDevice, cpu: Int?, completion: CompletionMode, blockSize: Int,
         window: MeasurementWindow, sliceMilliseconds: Int, fill: UInt8?, expect: UInt8?) {
        self.first = first
        self.second = second
        self.cpu = cpu
        self.completion = completion
        self.blockSize = blockSize
        self.window = window
        self.sliceNanoseconds = UInt64(sliceMilliseconds) * 1_000_000
        self.fill = fill
        self.expect = expect
    }

    deinit {
        first.histogram.deallocate()
        second.histogram.deallocate()
    }

    /// The thread body.
    func run() {
        if let cpu {
            let code = spindle_pin_current_thread(Int32(cpu))
            if code != 0 { failure = "cannot pin the paired run's thread to CPU \(cpu) (error \(code))" }
        }
        _ = spindle_set_thread_name("bench-pair")
        if failure == nil { drive() }
        finished.store(true, ordering: .releasing)
    }

    private func drive() {
        var a = first, b = second
        let depth = max(a.queue.slotCount, b.queue.slotCount)
        let context = SliceContext(polling: completion == .poll, blockSize: blockSize, fill: fill, expect: expect,
                                   startTimes: .allocate(capacity: depth), reading: .allocate(capacity: depth))
        defer {
            context.startTimes.deallocate()
            context.reading.deallocate()
        }
        if !context.polling {
            a.queue.makeCallBlocking()
            b.queue.makeCallBlocking()
        }
        var ratios: [Double] = []
        ratios.reserveCapacity(Int((window.end - window.start) / (2 * sliceNanoseconds)) + 16)
        var failure: String?

        // Warm-up (--ramp): the two take turns, nothing is counted.
        var onA = true
        while failure == nil, monotonicNanoseconds() < window.start {
            let end = monotonicNanoseconds() + sliceNanoseconds
            failure = onA ? Self.runSlice(&a, until: end, record: false, context).failure
                          : Self.runSlice(&b, until: end, record: false, context).failure
            onA.toggle()
        }
        // Measured pairs until one ends after the window: A B, then B A, and so on.
        var pair = 0
        measuring: while failure == nil {
            var rateA = 0.0, rateB = 0.0
            for position in 0..<2 {
                let sliceOnA = (position == 0) == (pair % 2 == 0)
                let end = monotonicNanoseconds() + sliceNanoseconds
                let outcome = sliceOnA ? Self.runSlice(&a, until: end, record: true, context)
                                       : Self.runSlice(&b, until: end, record: true, context)
                if let broken = outcome.failure {
                    failure = broken
                    break measuring
                }
                if sliceOnA { rateA = outcome.rate } else { rateB = outcome.rate }
            }
            ratios.append(rateB / rateA)
            pair += 1
            if monotonicNanoseconds() >= window.end { break }
        }
        first = a
        second = b
        self.ratios = ratios
        self.failure = failure
    }

    /// What one slice did: its completions over its duration, or why it stopped.
    struct SliceOutcome {
        var rate = 0.0
        var failure: String?
    }

    private static func brokenRing(_ label: String) -> String {
        "device \(label): backend broke the used ring (split: used.idx moved by more than the ring size; packed: a used descriptor names an id not in flight)"
    }

    /// One slice on `device`: fill the ring to its depth, refill each completed slot until
    /// `end`, then drain (wait for every request in flight). With `record`, the completions,
    /// latencies, duration, CPU time, kicks and calls are added to the device's totals.
    private static func runSlice(_ device: inout PairedDevice, until end: UInt64, record: Bool,
                                 _ context: SliceContext) -> SliceOutcome {
        // Work on locals, as QueueWorker does.
        var queue = device.queue
        var generator = device.generator
        var histogram = device.histogram
        defer {
            device.queue = queue
            device.generator = generator
            device.histogram = histogram
        }
        let depth = queue.slotCount
        let polling = context.polling, blockSize = context.blockSize, fill = context.fill, expect = context.expect
        let startTimes = context.startTimes, reading = context.reading
        var kicks: UInt64 = 0, wakeups: UInt64 = 0, callSignals: UInt64 = 0, completed: UInt64 = 0
        var failed: UInt64 = 0, firstBadStatus: UInt8?

        // Calls left from this device's previous slice would count as this one's.
        if polling { queue.suppressCalls() }
        _ = queue.takePendingCalls()
        let cpuAtStart = record ? threadCPUNanoseconds() : 0
        var now = monotonicNanoseconds()
        let start = now
        for slot in 0..<depth {
            QueueWorker.issue(slot, at: now, queue: &queue, generator: &generator, reading: reading,
                              startTimes: startTimes, fill: fill, blockSize: blockSize)
        }
        if queue.publish() { kicks &+= 1 }
        var inFlight = depth
        var draining = false

        while inFlight > 0 {
            guard var pending = queue.pendingCompletions() else { return SliceOutcome(failure: brokenRing(device.label)) }
            if pending == 0 {
                if polling {
                    repeat { pending = queue.pendingCompletions() ?? -1 } while pending == 0
                } else {
                    while !queue.requestCallOnNextCompletion() {
                        callSignals &+= queue.waitForCall()
                        wakeups &+= 1
                    }
                    pending = queue.pendingCompletions() ?? -1
                }
                guard pending > 0 else { return SliceOutcome(failure: brokenRing(device.label)) }
            }
            now = monotonicNanoseconds()
            if now >= end { draining = true }
            for _ in 0..<pending {
                let entry = queue.takeCompletion()
                guard let slot = queue.slot(forUsedID: entry.id) else {
                    return SliceOutcome(failure: "device \(device.label): backend returned descriptor id \(entry.id), which is no request head")
                }
                let status = queue.status(of: slot)
                if status != BlkStatus.ok {
                    failed &+= 1
                    if firstBadStatus == nil { firstBadStatus = status }
                } else if let expect, reading[slot] {
                    let bytes = UnsafeRawBufferPointer(start: queue.data(of: slot), count: blockSize)
                    if bytes.contains(where: { $0 != expect }) { failed &+= 1 }
                }
                if record { histogram.record(now &- startTimes[slot]) }
                completed &+= 1
                if draining {
                    inFlight -= 1
                } else {
                    QueueWorker.issue(slot, at: now, queue: &queue, generator: &generator, reading: reading,
                                      startTimes: startTimes, fill: fill, blockSize: blockSize)
                }
            }
            if polling { queue.suppressCalls() }
            if queue.publish() { kicks &+= 1 }
        }

        // Failures count in every slice, warm-up included, as in an unpaired run.
        device.result.failedRequests &+= failed
        if device.result.firstBadStatus == nil { device.result.firstBadStatus = firstBadStatus }
        let nanoseconds = max(1, now &- start)
        if record {
            device.result.completed &+= completed
            device.result.bytes &+= completed &* UInt64(blockSize)
            device.result.windowEnd &+= nanoseconds
            device.result.cpuNanoseconds &+= threadCPUNanoseconds() &- cpuAtStart
            device.result.kicks &+= kicks
            device.result.wakeups &+= wakeups
            device.result.callSignals &+= polling ? queue.takePendingCalls() : callSignals
        }
        return SliceOutcome(rate: Double(completed) * 1e9 / Double(nanoseconds))
    }
}
