import CSpindle
import VhostUserFrontend
#if canImport(Glibc)
import Glibc
#endif

/// What `--dirty-log` measured on the harvesting side.
struct HarvestResult: Sendable {
    var harvests: UInt64 = 0
    /// Dirty pages found, summed over the harvests (a page dirty in two harvests counts twice).
    var pages: UInt64 = 0
    var totalNanoseconds: UInt64 = 0
    var maxNanoseconds: UInt64 = 0
}

/// `--dirty-log`'s side thread: harvests the dirty log every `interval` nanoseconds as QEMU's
/// migration thread syncs it (read each u64 chunk, atomically swap the non-zero ones with 0).
/// It runs beside the queue threads and never touches their rings; unpinned, like QEMU's. It
/// sleeps a whole interval at a time (poll on an eventfd that `stop()` writes): waking more
/// often would keep a CPU from idling and change what an eventfd-mode run measures.
final class DirtyLogHarvester: @unchecked Sendable {
    let log: FrontendDirtyLog
    let interval: UInt64
    private let stopFD: Int32
    /// Written by the thread only, read after `stop()` has joined it.
    private(set) var result = HarvestResult()
    private var thread = pthread_t()

    init(log: FrontendDirtyLog, intervalMilliseconds: Int) throws(BenchFailure) {
        self.log = log
        self.interval = UInt64(intervalMilliseconds) * 1_000_000
        stopFD = eventfd(0, Int32(EFD_CLOEXEC))
        guard stopFD >= 0 else { throw BenchFailure("eventfd for the dirty-log harvester failed: \(String(cString: strerror(errno)))") }
    }

    deinit {
        close(stopFD)
    }

    func start() throws(BenchFailure) {
        let context = Unmanaged.passRetained(self).toOpaque()
        let code = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<DirtyLogHarvester>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, context)
        guard code == 0 else {
            Unmanaged<DirtyLogHarvester>.fromOpaque(context).release()
            throw BenchFailure("cannot start the dirty-log harvester thread: \(String(cString: strerror(code)))")
        }
    }

    /// Stops the thread, waits for it, then harvests once more (QEMU's last sync).
    func stop() -> HarvestResult {
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
        pthread_join(thread, nil)
        harvestOnce()
        return result
    }

    private func run() {
        _ = spindle_set_thread_name("bench-harvest")
        var next = monotonicNanoseconds() &+ interval
        while true {
            let now = monotonicNanoseconds()
            if now < next {
                var stop = pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)
                let milliseconds = Int32(clamping: (next - now + 999_999) / 1_000_000)
                if poll(&stop, 1, milliseconds) > 0 { return }
                continue
            }
            harvestOnce()
            next &+= interval
            if next < now { next = now &+ interval }
        }
    }

    private func harvestOnce() {
        let start = monotonicNanoseconds()
        let pages = log.harvest()
        let took = monotonicNanoseconds() &- start
        result.harvests &+= 1
        result.pages &+= UInt64(pages)
        result.totalNanoseconds &+= took
        result.maxNanoseconds = max(result.maxNanoseconds, took)
    }
}
