import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import CSpindle
import Glibc
import Logging

/// The body of a stream job, on its own plain thread: walks the top image cluster by
/// cluster and pulls into it what the layers above the base hold where the top holds
/// nothing, with blocking reads of the chain and the top's own allocation path
/// (`Qcow2Allocator.fillUnallocated`: it checks again, under the image's allocation lock,
/// that the cluster is still unallocated, so a guest write that got there first wins).
/// Then it has the control thread drop the layers. Talks to the job's state only through
/// the driver API.
final class StreamCopier: @unchecked Sendable {
    private let job: StreamJob
    private let driver: JobDriver
    private let plan: StreamPlan
    private let jobID: String
    private var logger = Logger(label: "spindle.job")
    // Thread-confined after run() starts.
    private var copied: UInt64 = 0
    private var pace = CopyPace()

    /// The most the copier reads and writes at once.
    static let chunkBytes = 1 << 20

    init(job: StreamJob, driver: JobDriver, plan: StreamPlan, jobID: String) {
        self.job = job
        self.driver = driver
        self.plan = plan
        self.jobID = jobID
        logger[metadataKey: "job"] = "\(jobID)"
    }

    func run(started: Bool) {
        _ = spindle_set_thread_name("stream-\(jobID)")
        guard started else {
            end(.cancelled)
            return
        }
        let top = plan.topIO
        guard let allocator = top.allocator else {
            end(.failed("Block node is read-only"))
            return
        }
        let clusterSize = Int(top.layout.clusterSize)
        let chunkClusters = max(1, Self.chunkBytes / clusterSize)
        guard let buffer = malloc(chunkClusters * clusterSize), let scratch = malloc(top.syncReadScratchBytes) else {
            end(.failed("Cannot allocate memory"))
            return
        }
        defer {
            free(buffer)
            free(scratch)
        }
        let length = top.length
        let tableSpan = UInt64(clusterSize) << UInt64(top.layout.l2Bits)  // guest bytes one L2 table maps
        pace.restart()
        var offset: UInt64 = 0
        while offset < length {
            if driver.checkpoint() == .cancel {
                end(.cancelled)
                return
            }
            // The next run of clusters to copy, inside one chunk and one L2 table.
            let chunkEnd = min(length, offset + UInt64(chunkClusters * clusterSize), (offset / tableSpan + 1) * tableSpan)
            var cursor = offset
            var run: Range<UInt64>?
            while cursor < chunkEnd {
                guard let needed = needsCopy(cursor, UInt64(clusterSize)) else {
                    end(.failed("cannot read the metadata of node '\(plan.top)' or its backing chain at offset \(cursor); check the images with qemu-img check"))
                    return
                }
                cursor += UInt64(clusterSize)
                if needed {
                    run = (run?.lowerBound ?? cursor - UInt64(clusterSize))..<cursor
                } else if run != nil {
                    break
                }
            }
            if let run, let failure = copy(run, buffer: buffer, scratch: scratch, allocator: allocator) {
                end(.failed(failure))
                return
            }
            offset = cursor
            driver.setProgress(current: min(offset, length), total: length)
            pace.pace(driver)
        }
        guard driver.awaitFinalize() else {
            end(.cancelled)
            return
        }
        let job = self.job
        if let failure = runOnControlThread({ await job.finish() }) {
            driver.conclude(.failed(failure))
            return
        }
        logger.notice("stream completed", metadata: ["node": "\(plan.top)", "bytes": "\(copied)"])
        driver.conclude(.success)
    }

    /// Whether the cluster at `offset` is unallocated in the top and allocated in a layer
    /// above the base (nil: metadata unreadable).
    private func needsCopy(_ offset: UInt64, _ length: UInt64) -> Bool? {
        guard let inTop = plan.topIO.isAllocatedHere(offset, length: length) else { return nil }
        if inTop { return false }
        for layer in plan.copied {
            switch layer.io {
            case .none: continue
            case .raw(let file): if offset < file.length { return true }
            case .qcow2(let io):
                guard let here = io.isAllocatedHere(offset, length: length) else { return nil }
                if here { return true }
            }
        }
        return false
    }

    /// Reads the run from the chain and writes it into the clusters of the top that are
    /// still unallocated. Returns an error text on failure.
    private func copy(_ run: Range<UInt64>, buffer: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer,
                      allocator: Qcow2Allocator) -> String? {
        let bytes = Int(run.upperBound - run.lowerBound)
        let read = plan.topIO.readBackingSync(run.lowerBound, count: bytes, into: buffer, scratch: scratch)
        if read < 0 {
            logger.error("stream: reading the backing chain failed", metadata: ["node": "\(plan.top)", "offset": "\(run.lowerBound)", "error": "\(errorText(read))"])
            return errorText(read)
        }
        let clusters = bytes / Int(plan.topIO.layout.clusterSize)
        let written = allocator.fillUnallocated(plan.topIO, offset: run.lowerBound, clusters: clusters, data: buffer)
        if written < 0 {
            logger.error("stream: writing the top image failed; the chain stays", metadata: [
                "node": "\(plan.top)", "offset": "\(run.lowerBound)", "error": "\(errorText(Int32(written)))"])
            return errorText(Int32(written))
        }
        copied += UInt64(written)
        pace.copied(UInt64(written))
        return nil
    }

    private func end(_ outcome: JobOutcome) {
        let job = self.job
        runOnControlThread { await job.abandon() }
        if case .failed(let message) = outcome {
            logger.error("stream failed; the node keeps its backing chain", metadata: ["node": "\(plan.top)", "error": "\(message)"])
        } else {
            logger.notice("stream cancelled; the node keeps its backing chain", metadata: ["node": "\(plan.top)"])
        }
        driver.conclude(outcome)
    }

    private func errorText(_ result: Int32) -> String { String(cString: strerror(-result)) }
}
