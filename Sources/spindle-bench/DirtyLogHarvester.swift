import CSpindle
import Synchronization
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
/// It runs beside the queue threads and never touches their rings; unpinned, like QEMU's.
final class DirtyLogHarvester: @unchecked Sendable {
    let log: FrontendDirtyLog
    let interval: UInt64
    private let stopRequested = Atomic<Bool>(false)
    /// Written by the thread only, read after `stop()` has joined it.
    private(set) var result = HarvestResult()
    private var thread = pthread_t()

    init(log: FrontendDirtyLog, intervalMilliseconds: Int) {
        self.log = log
        self.interval = UInt64(intervalMilliseconds) * 1_000_000
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
        stopRequested.store(true, ordering: .releasing)
        pthread_join(thread, nil)
        harvestOnce()
        return result
    }

    private func run() {
        _ = spindle_set_thread_name("bench-harvest")
        var next = monotonicNanoseconds() &+ interval
        while !stopRequested.load(ordering: .acquiring) {
            // Sleep in short steps so stop() does not wait a whole interval.
            let now = monotonicNanoseconds()
            if now < next {
                var nap = timespec(tv_sec: 0, tv_nsec: Int(min(next - now, 5_000_000)))
                nanosleep(&nap, nil)
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
