/// The guest memory table: SET_MEM_TABLE, and ADD/REM_MEM_REG (CONFIGURE_MEM_SLOTS).
extension VhostUserBackendSession {
    func setMemoryTable(_ regions: [VhostUserMemoryRegionFD]) async -> VhostUserRequestOutcome {
        do {
            let table = try GuestMemory.map(regions.map { (region: $0.region, fd: $0.fd) })
            await replaceMemory(with: table)
            return .done
        } catch {
            return .failed("cannot map the guest memory table: \(error)")
        }
    }

    func addMemoryRegion(_ region: VhostUserMemoryRegionFD) async -> VhostUserRequestOutcome {
        do {
            let mapping = try GuestMemoryMapping.map(region.region, fd: region.fd)
            await replaceMemory(with: try (memory ?? GuestMemory()).adding(mapping))
            return .done
        } catch {
            return .failed("cannot add guest memory region: \(error)")
        }
    }

    func removeMemoryRegion(_ region: MemoryRegionDescription) async -> VhostUserRequestOutcome {
        guard let current = memory, let reduced = current.removing(region) else {
            return .failed("no mapped guest memory region matches \(region)")
        }
        await replaceMemory(with: reduced)
        return .done
    }

    /// Swaps the guest memory table. Rings running on the old table are stopped first (their
    /// in-flight requests complete) and restarted on the new one at the same index.
    private func replaceMemory(with table: GuestMemory) async {
        let wasRunning = vrings.indices.filter { vrings[$0].running != nil }
        for i in wasRunning { _ = await stopQueue(i) }
        memory = table
        for i in wasRunning { startQueueIfReady(i) }
    }
}
