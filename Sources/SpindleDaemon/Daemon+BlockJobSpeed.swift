import BlockJobs
import ControlThread
import Monitor

/// block-job-set-speed and query-block-jobs: the job table under the job mutex. The copy
/// thread reads the new limit at its next pace check (JobDriver.speed) and is woken if it
/// sleeps for the old one.
extension Daemon {
    public func blockJobSetSpeed(device: String, speed: Int64) throws(QMPError) {
        let found: Bool
        do throws(JobError) {
            found = try jobs.withJobLock { table throws(JobError) -> Bool in
                guard table.isBlockJob(device) else { return false }
                try table.setSpeed(device, to: speed)
                return true
            }
        } catch {
            throw QMPError(.genericError, error.message)
        }
        // QEMU's find_block_job: its class and text.
        guard found else { throw QMPError(.deviceNotActive, "Block job '\(device)' not found") }
        logger.info("block job speed set", metadata: ["job": "\(device)", "speed": "\(speed)"])
    }

    public func queryBlockJobs() -> [BlockJobQueryInfo] {
        jobs.withJobLock { $0.queryBlockJobs() }.map {
            BlockJobQueryInfo(id: $0.id, type: $0.type, status: $0.status.rawValue, offset: $0.offset, length: $0.length,
                              speed: $0.speed, busy: $0.busy, paused: $0.paused, ready: $0.ready,
                              autoFinalize: $0.autoFinalize, autoDismiss: $0.autoDismiss, error: $0.error)
        }
    }
}
