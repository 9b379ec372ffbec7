import VhostUserFrontend
#if canImport(Glibc)
import Glibc
#endif

/// One benchmark run: connect, start the queue threads, sample the backend's CPU around
/// the measured window, wait for the threads to drain, stop the queues, merge results.
enum BenchRun {
    /// How long after the window the threads get to drain before the run is declared hung.
    static let drainTimeoutNanoseconds: UInt64 = 10_000_000_000

    static func run(_ options: BenchOptions) throws(BenchFailure) -> BenchReport {
        var frontendOptions = FrontendOptions(queueCount: options.queues, slotsPerQueue: options.iodepth,
                                              maxRequestBytes: options.blockSize, queueSize: options.queueSize,
                                              eventIndex: options.eventIndex, indirectDescriptors: options.indirect)
        frontendOptions.inflightTracking = options.inflight
        frontendOptions.ringLayout = options.packed ? .packed : .split
        frontendOptions.dirtyLogging = options.dirtyLog ? .onRequest : .off
        frontendOptions.discardAndWriteZeroes = options.pattern == .discard || options.pattern == .writeZeroes
        let frontend: VhostUserBlkFrontend
        do { frontend = try VhostUserBlkFrontend(socketPath: options.socket, options: frontendOptions) } catch {
            throw BenchFailure(error.description)
        }
        let capacity = frontend.config?.capacityBytes
        let addressed = try addressedBytes(options, capacity: capacity, blockSize: frontend.config?.blockSize)
        if frontend.isReadOnly, options.pattern != .read, options.pattern != .randread {
            throw BenchFailure("the device is read-only (VIRTIO_BLK_F_RO); use --rw read or randread")
        }

        // Logging on while the rings run (QEMU's migration start), before the first request.
        var harvester: DirtyLogHarvester?
        if options.dirtyLog {
            let log: FrontendDirtyLog
            do { log = try frontend.startDirtyLog() } catch { throw BenchFailure(error.description) }
            harvester = try DirtyLogHarvester(log: log, intervalMilliseconds: options.harvestMilliseconds)
            try harvester?.start()
        }

        let cpus = cpuAssignment(options)
        let now = monotonicNanoseconds()
        let start = now + UInt64(options.rampSeconds * 1e9)
        let window = MeasurementWindow(start: start, end: start + UInt64(options.runtimeSeconds * 1e9))
        let blocks = addressed / UInt64(options.blockSize)
        let seed = now | 1
        let workers = frontend.queues.map { queue in
            QueueWorker(queue: queue,
                        generator: WorkloadGenerator(pattern: options.pattern, readPercent: options.readPercent,
                                                     blockCount: blocks, blockSize: options.blockSize,
                                                     seed: seed &* UInt64(queue.index + 1) &+ 0x9E37_79B9_7F4A_7C15,
                                                     startBlock: blocks / UInt64(options.queues) * UInt64(queue.index)),
                        cpu: cpus.isEmpty ? nil : cpus[queue.index % cpus.count],
                        completion: options.completion, blockSize: options.blockSize, window: window,
                        fill: options.fill, expect: options.expect)
        }
        var threads: [pthread_t] = []
        for worker in workers { threads.append(try QueueThreads.start(worker)) }

        // Backend CPU, sampled at the window's edges; meanwhile watch the connection.
        watch(frontend, until: window.start)
        let backendBefore = options.backendPID.flatMap { processCPUMicroseconds(pid: $0) }
        let machineBefore = MachineCPUSample.sample()
        let sampledStart = monotonicNanoseconds()
        watch(frontend, until: window.end)
        let backendAfter = options.backendPID.flatMap { processCPUMicroseconds(pid: $0) }
        let machineAfter = MachineCPUSample.sample()
        let sampledEnd = monotonicNanoseconds()
        if options.backendPID != nil, backendBefore == nil || backendAfter == nil {
            throw BenchFailure("cannot read /proc/\(options.backendPID!)/stat: is the backend PID right?")
        }

        // Watchdog: a backend that stops completing requests must not hang the run.
        let deadline = window.end + drainTimeoutNanoseconds
        while !workers.allSatisfy({ $0.finished.load(ordering: .acquiring) }) {
            guard monotonicNanoseconds() < deadline else {
                let stuck = workers.filter { !$0.finished.load(ordering: .acquiring) }.map { String($0.queue.index) }
                abort("queue(s) \(stuck.joined(separator: ",")) still had requests in flight 10 s after the run: the backend stopped completing them")
            }
            if let failure = frontend.waitForBackendFailure(milliseconds: 5) { abort(failure) }
        }
        threads.forEach(QueueThreads.join)
        let harvest = harvester?.stop()
        if harvester != nil {
            do { try frontend.stopDirtyLog() } catch { throw BenchFailure(error.description) }
        }

        for worker in workers {
            if let failure = worker.result.failure { throw BenchFailure(failure) }
        }
        do { try frontend.shutdown(finalQueues: workers.map(\.queue)) } catch { throw BenchFailure(error.description) }

        var merged = LatencyHistogram()
        for worker in workers { merged.merge(worker.histogram) }
        var backendCPU: UInt64?
        if let before = backendBefore, let after = backendAfter { backendCPU = after &- before }
        return BenchReport(options: options, cpus: cpus, queueSize: frontendOptions.effectiveQueueSize,
                           addressedBytes: addressed, capacityBytes: capacity,
                           negotiatedFeatures: frontend.negotiatedFeatures,
                           protocolFeatures: frontend.protocolFeatures.rawValue,
                           results: workers.map(\.result), histogram: merged,
                           backendCPUMicroseconds: backendCPU, backendWindowNanoseconds: sampledEnd &- sampledStart,
                           machineBefore: machineBefore, machineAfter: machineAfter, harvest: harvest)
    }

    /// Sleeps until `deadline`, ending the run if the backend goes away meanwhile.
    private static func watch(_ frontend: VhostUserBlkFrontend, until deadline: UInt64) {
        while true {
            let now = monotonicNanoseconds()
            guard now < deadline else { return }
            let milliseconds = Int32(clamping: (deadline - now + 999_999) / 1_000_000)
            if let failure = frontend.waitForBackendFailure(milliseconds: milliseconds) { abort(failure) }
        }
    }

    /// Ends the process at once. The queue threads may still be using shared memory (a
    /// thread blocked on a call that will never come, or spinning on a dead ring), so
    /// nothing may be torn down under them: no unwinding, no deinit.
    static func abort(_ message: String) -> Never {
        printError(message)
        exit(1)
    }

    /// --size or the capacity, checked against the block size and the device's block size.
    static func addressedBytes(_ options: BenchOptions, capacity: UInt64?, blockSize: UInt32?) throws(BenchFailure) -> UInt64 {
        guard let size = options.size ?? capacity else {
            throw BenchFailure("the backend does not offer GET_CONFIG, so its capacity is unknown: give --size")
        }
        if let capacity, size > capacity {
            throw BenchFailure("--size \(size) is larger than the device (\(capacity) bytes)")
        }
        guard size >= UInt64(options.blockSize) else {
            throw BenchFailure("the addressed range (\(size) bytes) is smaller than one block of \(options.blockSize)")
        }
        if let blockSize, blockSize >= 512, options.blockSize % Int(blockSize) != 0 {
            throw BenchFailure("--bs \(options.blockSize) is not a multiple of the device's block size \(blockSize)")
        }
        return size
    }

    /// The CPU of each queue thread, or none when pinning is off.
    static func cpuAssignment(_ options: BenchOptions) -> [Int] {
        guard options.pin else { return [] }
        if let cpus = options.cpus { return (0..<options.queues).map { cpus[$0 % cpus.count] } }
        let online = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return (0..<options.queues).map { $0 % online }
    }
}
