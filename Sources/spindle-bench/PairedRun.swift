import VhostUserFrontend
#if canImport(Glibc)
import Glibc
#endif

/// A paired run (--pair-socket): connect and negotiate both devices, start the one thread that
/// alternates between them (PairedQueueWorker), sample the backend's CPU around the window,
/// wait for both rings to drain, stop both devices, report A in the usual keys and B with the
/// per-pair ratios under "pair".
enum PairedRun {
    static func run(_ options: BenchOptions) throws(BenchFailure) -> BenchReport {
        guard let pairSocket = options.pairSocket else { throw BenchFailure("a paired run needs --pair-socket") }
        let labelA = "A (\(options.socket))", labelB = "B (\(pairSocket))"
        let (frontendA, queueSizeA) = try connect(options.socket, label: labelA, packed: options.packed, options)
        let (frontendB, queueSizeB) = try connect(pairSocket, label: labelB, packed: options.pairIsPacked, options)
        let addressedA = try checkDevice(frontendA, label: labelA, options)
        let addressedB = try checkDevice(frontendB, label: labelB, options)

        let cpus = BenchRun.cpuAssignment(options)
        let now = monotonicNanoseconds()
        let start = now + UInt64(options.rampSeconds * 1e9)
        let window = MeasurementWindow(start: start, end: start + UInt64(options.runtimeSeconds * 1e9))
        func device(_ frontend: VhostUserBlkFrontend, _ label: String, _ addressed: UInt64, seed: UInt64) -> PairedDevice {
            PairedDevice(label: label, queue: frontend.queues[0],
                         generator: WorkloadGenerator(pattern: options.pattern, readPercent: options.readPercent,
                                                      blockCount: addressed / UInt64(options.blockSize),
                                                      blockSize: options.blockSize, seed: seed, startBlock: 0))
        }
        let worker = PairedQueueWorker(first: device(frontendA, labelA, addressedA, seed: (now | 1) &+ 0x9E37_79B9_7F4A_7C15),
                                       second: device(frontendB, labelB, addressedB, seed: (now | 1) &* 3 &+ 0x9E37_79B9_7F4A_7C15),
                                       cpu: cpus.first, completion: options.completion, blockSize: options.blockSize,
                                       window: window, sliceMilliseconds: options.sliceMilliseconds,
                                       fill: options.fill, expect: options.expect)
        let thread = try startThread(worker)

        // Backend CPU, sampled at the window's edges; meanwhile watch both connections.
        let frontends = [(labelA, frontendA), (labelB, frontendB)]
        watch(frontends, until: window.start)
        let backendBefore = options.backendPID.flatMap { processCPUMicroseconds(pid: $0) }
        let machineBefore = MachineCPUSample.sample()
        let sampledStart = monotonicNanoseconds()
        watch(frontends, until: window.end)
        let backendAfter = options.backendPID.flatMap { processCPUMicroseconds(pid: $0) }
        let machineAfter = MachineCPUSample.sample()
        let sampledEnd = monotonicNanoseconds()
        if let pid = options.backendPID, backendBefore == nil || backendAfter == nil {
            throw BenchFailure("cannot read /proc/\(pid)/stat: is the backend PID right?")
        }

        // Watchdog: the last pair ends up to two slices after the window; a backend that
        // stops completing requests must not hang the run.
        let deadline = window.end + 2 * worker.sliceNanoseconds + BenchRun.drainTimeoutNanoseconds
        while !worker.finished.load(ordering: .acquiring) {
            guard monotonicNanoseconds() < deadline else {
                BenchRun.abort("the paired run still had requests in flight 10 s after its last slice should have ended: the backend stopped completing them")
            }
            watch(frontends, until: monotonicNanoseconds() + 5_000_000)
        }
        pthread_join(thread, nil)
        if let failure = worker.failure { throw BenchFailure(failure) }
        for (label, frontend, queue) in [(labelA, frontendA, worker.first.queue), (labelB, frontendB, worker.second.queue)] {
            do { try frontend.shutdown(finalQueues: [queue]) } catch { throw BenchFailure("device \(label): \(error.description)") }
        }

        // The worker frees its histograms with itself: the report gets copies.
        var histogramA = LatencyHistogram(), histogramB = LatencyHistogram()
        histogramA.merge(worker.first.histogram)
        histogramB.merge(worker.second.histogram)
        let pair = PairedResult(socket: pairSocket, packed: options.pairIsPacked, queueSize: queueSizeB,
                                negotiatedFeatures: frontendB.negotiatedFeatures, addressedBytes: addressedB,
                                result: worker.second.result, histogram: histogramB,
                                sliceMilliseconds: options.sliceMilliseconds, ratios: worker.ratios,
                                firstResult: worker.first.result)
        var backendCPU: UInt64?
        if let before = backendBefore, let after = backendAfter { backendCPU = after &- before }
        return BenchReport(options: options, cpus: cpus.isEmpty ? [] : [cpus[0]], queueSize: queueSizeA,
                           addressedBytes: addressedA, capacityBytes: frontendA.config?.capacityBytes,
                           negotiatedFeatures: frontendA.negotiatedFeatures,
                           protocolFeatures: frontendA.protocolFeatures.rawValue,
                           results: [worker.first.result], histogram: histogramA,
                           backendCPUMicroseconds: backendCPU, backendWindowNanoseconds: sampledEnd &- sampledStart,
                           machineBefore: machineBefore, machineAfter: machineAfter, harvest: nil, pair: pair)
    }

    /// Connects one device with the run's options and the given ring layout; returns it and
    /// its ring size.
    private static func connect(_ socket: String, label: String, packed: Bool,
                                _ options: BenchOptions) throws(BenchFailure) -> (VhostUserBlkFrontend, Int) {
        var frontendOptions = FrontendOptions(queueCount: 1, slotsPerQueue: options.iodepth,
                                              maxRequestBytes: options.blockSize, queueSize: options.queueSize,
                                              eventIndex: options.eventIndex, indirectDescriptors: options.indirect)
        frontendOptions.inflightTracking = options.inflight
        frontendOptions.ringLayout = packed ? .packed : .split
        frontendOptions.discardAndWriteZeroes = options.pattern == .discard || options.pattern == .writeZeroes
        do {
            return (try VhostUserBlkFrontend(socketPath: socket, options: frontendOptions), frontendOptions.effectiveQueueSize)
        } catch {
            throw BenchFailure("device \(label): \(error.description)")
        }
    }

    /// The device's addressed bytes (--size or its capacity), checked as an unpaired run does.
    private static func checkDevice(_ frontend: VhostUserBlkFrontend, label: String,
                                    _ options: BenchOptions) throws(BenchFailure) -> UInt64 {
        if frontend.isReadOnly, options.pattern != .read, options.pattern != .randread {
            throw BenchFailure("device \(label) is read-only (VIRTIO_BLK_F_RO); use --rw read or randread")
        }
        do {
            return try BenchRun.addressedBytes(options, capacity: frontend.config?.capacityBytes,
                                               blockSize: frontend.config?.blockSize)
        } catch {
            throw BenchFailure("device \(label): \(error.description)")
        }
    }

    /// Sleeps until `deadline`, watching every connection; ends the run if a backend goes away.
    private static func watch(_ frontends: [(String, VhostUserBlkFrontend)], until deadline: UInt64) {
        while true {
            for (label, frontend) in frontends {
                let now = monotonicNanoseconds()
                guard now < deadline else { return }
                // Each connection in turn, a short wait each, so neither goes unwatched long.
                let milliseconds = Int32(clamping: min(20, (deadline - now + 999_999) / 1_000_000))
                if let failure = frontend.waitForBackendFailure(milliseconds: milliseconds) {
                    BenchRun.abort("device \(label): \(failure)")
                }
            }
        }
    }

    /// Starts the worker on a plain pthread (as QueueThreads does for QueueWorker).
    private static func startThread(_ worker: PairedQueueWorker) throws(BenchFailure) -> pthread_t {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(worker).toOpaque()
        let code = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<PairedQueueWorker>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, context)
        guard code == 0 else {
            Unmanaged<PairedQueueWorker>.fromOpaque(context).release()
            throw BenchFailure("cannot start the paired run's thread: \(String(cString: strerror(code)))")
        }
        return thread
    }
}
