import BlockCommon
import ControlThread

extension VhostUserBlkExport {
    /// Each queue's request figures since the export was added (index = queue), read
    /// without stopping the IOThreads (see VirtioBlk/BlockStatsCounters.swift).
    public func queueStats() -> [BlockIOStats] {
        device.stats.snapshot()
    }
}
