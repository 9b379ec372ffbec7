/// Debug log lines with a split ring's indices in guest memory when it starts and when
/// GET_VRING_BASE is answered: what a hang after a migration or reconnect needs to be told
/// apart (requests never taken, completions never noticed, kicks turned off).
extension VhostUserBackendSession {
    /// Ring `i`'s indices as they stand now, or nil (packed ring, not set up, not mapped).
    func splitRingSnapshot(_ i: Int) -> SplitRingSnapshot? {
        guard !packedRingNegotiated, let memory, let size = vrings[i].size, let addresses = vrings[i].addresses,
              let ring = try? SplitVirtqueue(memory: memory, size: size, addresses: addresses,
                                             features: VirtqueueFeatures(negotiated: negotiatedFeatures)) else { return nil }
        return ring.snapshot
    }

    func logRingSnapshot(_ i: Int, _ event: String, deviceIndex: UInt32) {
        guard let snapshot = splitRingSnapshot(i) else { return }
        logger.debug("queue \(i): \(event) at avail index \(deviceIndex); in guest memory: \(snapshot)")
    }
}
