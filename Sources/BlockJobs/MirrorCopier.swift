import BlockCommon
import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import Logging

/// The body of a mirror job, on its own plain thread with its own io_uring: copies dirty
/// regions from source to target through the nodes' data paths until none is left (READY),
/// keeps copying what the guest dirties, and on job-complete does the final sync with the
/// source's BlockBackends drained, then has the control thread pivot. Talks to the job's
/// state only through the driver API.
final class MirrorCopier: @unchecked Sendable {
    private let job: any MirrorCopierHost
    /// What the job is called in logs and the thread name ("mirror", "commit").
    private let kind: String
    /// Finish at once when all is copied, without READY (an intermediate commit: nothing
    /// writes to its source, so there is nothing to keep in sync).
    private let completesWhenSynced: Bool
    private let driver: JobDriver
    private let filter: MirrorFilterIO
    private let length: UInt64
    private let options: MirrorOptions
    private let chunkBits: Int
    private var logger = Logger(label: "spindle.job")
    // Thread-confined after run() starts.
    private var copied: UInt64 = 0
    private var cursor = 0
    private var pace = CopyPace()
    /// Whether the copier has been over the whole bitmap once (the cursor wrapped or all
    /// was clean).
    private var passedOnce = false

    /// How long the copier sleeps when all is in sync, before looking again.
    private static let idleNanoseconds: UInt64 = 20_000_000

    init(job: any MirrorCopierHost, driver: JobDriver, filter: MirrorFilterIO, length: UInt64, options: MirrorOptions, kind: String = "mirror",
         completesWhenSynced: Bool = false) {
        self.job = job
        self.kind = kind
        self.completesWhenSynced = completesWhenSynced
        self.driver = driver
        self.filter = filter
        self.length = length
        self.options = options
        chunkBits = Int(max(1, options.bufferSize / options.granularity))
        logger[metadataKey: "job"] = "\(options.jobID)"
    }

    /// The copy's body; `started`: the job went created -> running (false: it was cancelled first).
    func run(started: Bool) {
        _ = spindle_set_thread_name("\(kind)-\(options.jobID)")
        guard started else {
            endWithoutPivot(.cancelled)
            return
        }
        let context: IOContext
        do {
            context = try IOContext(entries: 8)
        } catch {
            endWithoutPivot(.failed("cannot set up io_uring for the copy: \(error)"))
            return
        }
        let bufferSize = Int(UInt64(chunkBits) * options.granularity)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 4096, bufferSize) == 0, let buffer = raw else {
            endWithoutPivot(.failed("Cannot allocate memory"))
            return
        }
        defer { free(buffer) }
        let request = UnsafeMutablePointer<BlockRequest>.allocate(capacity: 1)
        request.initialize(to: BlockRequest())
        defer {
            request.pointee.releaseScratch()
            request.deinitialize(count: 1)
            request.deallocate()
        }
        let io = SyncIO(context: context, request: request, buffer: buffer)
        pace.restart()
        var ready = false
        var writingThrough = false
        while true {
            let step = driver.checkpoint()
            if step == .cancel {
                endWithoutPivot(.cancelled)
                return
            }
            if let failure = targetFailure() {
                endWithoutPivot(.failed(failure))
                return
            }
            if step == .complete {
                finalSync(io)
                return
            }
            if let failure = copyNextRun(io) {
                endWithoutPivot(.failed(failure))
                return
            }
            if !writingThrough && passedOnce {
                // Every region has been copied once: from now on writes go to both images,
                // so only what was dirtied during the first pass is left to copy.
                filter.startWritingThrough()
                writingThrough = true
            }
            if filter.bitmap.dirtyCount > 0 {
                pace.pace(driver)
                continue
            }
            if completesWhenSynced {
                finalSync(io)
                return
            }
            if !ready {
                // Source and target hold the same data: from now on writes go to both.
                if let failure = flushTarget(io) {
                    endWithoutPivot(.failed(failure))
                    return
                }
                driver.setReady()
                ready = true
                logger.notice("\(kind) ready: source and target in sync; job-complete switches to the target", metadata: ["bytes": "\(copied)"])
            }
            _ = driver.sleep(nanoseconds: Self.idleNanoseconds)
        }
    }

    /// Copies one run of dirty regions, if any. Returns an error text on failure (the run
    /// is marked dirty again).
    private func copyNextRun(_ io: SyncIO) -> String? {
        guard let run = filter.bitmap.takeRun(from: cursor, maxBits: chunkBits) else {
            passedOnce = true
            publishProgress()
            return nil
        }
        if run.first < cursor { passedOnce = true }
        let offset = UInt64(run.first) * options.granularity
        let bytes = min(UInt64(run.count) * options.granularity, length - offset)
        cursor = run.first + run.count
        filter.copying(first: run.first, count: run.count)
        defer { filter.copyDone() }
        let read = io.run(.read, offset: offset, length: bytes, on: filter.source)
        if read < 0 {
            filter.bitmap.markDirty(offset: offset, length: bytes)
            logger.error("\(kind): reading the source failed", metadata: ["node": "\(options.source)", "offset": "\(offset)", "error": "\(errorText(read))"])
            return errorText(read)
        }
        let written = io.run(.write, offset: offset, length: bytes, on: filter.target)
        if written < 0 {
            filter.bitmap.markDirty(offset: offset, length: bytes)
            logger.error("\(kind): writing the target failed; the guest stays on the source", metadata: [
                "node": "\(options.target)", "offset": "\(offset)", "error": "\(errorText(written))"])
            return errorText(written)
        }
        copied += bytes
        pace.copied(bytes)
        publishProgress()
        return nil
    }

    private func publishProgress() {
        let remaining = UInt64(filter.bitmap.dirtyCount) * options.granularity
        driver.setProgress(current: copied, total: copied + remaining)
    }

    /// Final sync: the control thread drains the source's BlockBackends, we copy what is
    /// still dirty (nothing new can be dirtied), flush the target, then the control thread
    /// pivots (or, if job-cancel came in the meantime, restores the source) and resumes.
    private func finalSync(_ io: SyncIO) {
        let job = self.job
        runOnControlThread { await job.drainForFinalSync() }
        var failure = targetFailure()
        while failure == nil, filter.bitmap.dirtyCount > 0 {
            failure = copyNextRun(io)
        }
        if failure == nil { failure = flushTarget(io) }
        if let failure {
            _ = runOnControlThread { await job.finishDrained(pivot: false) }
            driver.conclude(.failed(failure))
            return
        }
        let commit = driver.awaitFinalize()
        let refused = runOnControlThread { await job.finishDrained(pivot: commit) }
        if let refused {
            driver.conclude(.failed(refused))
        } else {
            driver.conclude(commit ? .success : .cancelled)
        }
    }

    private func endWithoutPivot(_ outcome: JobOutcome) {
        let job = self.job
        runOnControlThread { await job.restoreSource() }
        if case .failed(let message) = outcome {
            logger.error("\(kind) failed; the guest stays on its source", metadata: ["source": "\(options.source)", "error": "\(message)"])
        } else {
            logger.notice("\(kind) cancelled; the guest stays on its source")
        }
        driver.conclude(outcome)
    }

    private func flushTarget(_ io: SyncIO) -> String? {
        let result = io.run(.flush, offset: 0, length: 0, on: filter.target)
        return result < 0 ? errorText(result) : nil
    }

    private func targetFailure() -> String? {
        let errnoValue = filter.targetErrno
        return errnoValue == 0 ? nil : String(cString: strerror(errnoValue))
    }

    private func errorText(_ result: Int32) -> String { String(cString: strerror(-result)) }
}

/// The control-thread half of a job whose body is a MirrorCopier (the mirror, an active
/// commit): the graph changes the copier asks for, each under drain.
@ControlActor
protocol MirrorCopierHost: AnyObject, Sendable {
    /// Drains every BlockBackend of the source for the final sync.
    func drainForFinalSync() async
    /// Ends a final sync: pivot to the target, or give the source back; resumes. Returns an
    /// error text if the pivot was refused.
    func finishDrained(pivot: Bool) async -> String?
    /// Cancel or failure while not drained: the source's BlockBackends get the source back.
    func restoreSource() async
}

extension MirrorJob: MirrorCopierHost {}
