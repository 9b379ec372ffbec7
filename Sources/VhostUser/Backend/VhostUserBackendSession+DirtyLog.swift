import Glibc

/// Dirty logging for live migration (vhost-user "Migration"): SET_LOG_BASE shares the log,
/// VHOST_F_LOG_ALL (SET_FEATURES, +Features.swift) switches marking on and off, and
/// SET_VRING_ADDR's log flag (+Vrings.swift) adds each ring's used ring. Every change
/// reaches the running queues on their IOThreads before it is answered.
///
/// None of these is ever refused: QEMU 7.2 aborts when starting the log fails. A log that
/// cannot be used is reported to the operator and the previous one (or none) stays.
extension VhostUserBackendSession {
    /// What queue `i` marks: nothing unless LOG_ALL is negotiated, a log is mapped and the
    /// device marks at all (the x-dirty-log=unmarked test hook never installs a log).
    func dirtyLogForQueue(_ i: Int) -> VirtqueueDirtyLog {
        guard device.marksDirtyPages, negotiatedFeatures & VhostUserFeatureBits.logAll != 0,
              let dirtyLog else { return .off }
        return VirtqueueDirtyLog(bitmap: dirtyLog.bitmap, usedRingGuestAddress: vrings[i].usedRingLogAddress)
    }

    /// Hands every running queue its current log and waits until each has switched on its
    /// IOThread. A queue stopping meanwhile is harmless: it completes on whatever it has,
    /// and the one that replaces it starts with the current log.
    func applyDirtyLogToQueues() async {
        for i in vrings.indices {
            guard let queue = vrings[i].running, let thread = vrings[i].thread else { continue }
            await queue.replaceDirtyLog(dirtyLogForQueue(i), on: thread)
        }
    }

    /// Maps the new log, switches every running queue to it, unmaps the old one, then
    /// replies (a u64 0: QEMU waits for that reply although the header does not ask for it,
    /// and frees the old log as soon as it has it). Without LOG_SHMFD negotiated there is
    /// no reply (QEMU would not read one).
    func setLogBase(_ description: VhostUserLogDescription, fd: Int32?) async -> VhostUserRequestOutcome {
        defer { if let fd { Glibc.close(fd) } }  // a shared mapping outlives its fd
        guard negotiatedProtocolFeatures.contains(.logSHMFD) else {
            return .failed("SET_LOG_BASE without the LOG_SHMFD protocol feature; ignored")
        }
        do {
            let log = try DirtyLog.map(description, fd: fd)
            let previous = dirtyLog
            dirtyLog = log
            await applyDirtyLogToQueues()
            // No queue uses the previous log any more: it is unmapped here, before the reply.
            withExtendedLifetime(previous) {}
            logger.info("dirty log shared: \(log.size) bytes (covers \(log.bitmap.coveredBytes >> 20) MiB of guest memory)\(device.marksDirtyPages ? "" : "; x-dirty-log=unmarked: nothing will be marked (test only)")")
        } catch {
            logger.error("SET_LOG_BASE (size \(description.mmapSize), offset \(description.mmapOffset)): \(error); \(dirtyLog == nil ? "no dirty log is kept" : "the previous dirty log stays"), so pages this export writes are not reported and a live migration running now may copy stale guest memory; cancel it and check the frontend")
        }
        return .reply(VhostUserReply.u64(.setLogBase, 0))
    }

    /// The spec's SET_LOG_FD (a log eventfd QEMU never sends): the fd is closed.
    func setLogFD(_ fd: Int32) -> VhostUserRequestOutcome {
        Glibc.close(fd)
        return .done
    }
}
