import BlockCommon
import BlockGraph
import BlockJobs
import ControlThread
import Monitor

/// blockdev-create as QEMU has it: a job of type "create" (auto-finalize on, auto-dismiss
/// off: it stays `concluded`, with its error if it failed, until job-dismiss). The command
/// only starts it; everything about the options and the file is the job's error.
extension Daemon {
    public func blockdevCreate(jobID: String, options: BlockdevCreateOptions) throws(QMPError) {
        let driver: JobDriver
        do throws(JobError) {
            driver = try jobs.withJobLock { table throws(JobError) in
                try table.create(id: jobID, type: "create", options: JobOptions(autoFinalize: true, autoDismiss: false), registry: jobs)
            }
        } catch {
            throw QMPError(.genericError, error.message)
        }
        // Running before the command returns, as QEMU's job_start.
        guard driver.start() else {
            driver.conclude(.cancelled)
            return
        }
        let graph = graph
        Task { @ControlActor in
            do throws(BlockError) {
                try await graph.createImage(options, jobID: jobID)
            } catch {
                driver.conclude(.failed(error.message))
                return
            }
            driver.conclude(driver.awaitFinalize() ? .success : .cancelled)
        }
    }
}
