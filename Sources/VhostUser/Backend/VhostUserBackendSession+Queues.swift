import ControlThread
import Glibc
import IOThreads

/// Running queues: made by the device when a ring is ready, placed on the IOThread the
/// provider chooses, stopped (draining) before anything they use changes, moved between
/// IOThreads, and reported to the frontend when the guest breaks one.
extension VhostUserBackendSession {
    /// Moves a running queue to another IOThread: it stops on its current thread (taking no
    /// new requests, its in-flight ones complete), then starts on `thread` at the same avail
    /// index. Nothing is lost or completed twice. Returns false if the queue is not running.
    public func moveQueue(_ i: Int, to thread: IOThread) async -> Bool {
        guard vrings.indices.contains(i), vrings[i].running != nil, !closed else { return false }
        _ = await stopQueue(i)
        startQueueIfReady(i, on: thread)
        return vrings[i].running != nil
    }

    /// A drain of the device's storage ended: every running queue looks at its ring again.
    public func resumeQueuesAfterDrain() {
        for setup in vrings {
            guard let queue = setup.running, let thread = setup.thread else { continue }
            thread.post { _ in queue.resumeAfterDrain() }
        }
    }

    func startQueueIfReady(_ i: Int, on chosen: IOThread? = nil) {
        guard !closed, vrings[i].running == nil, vrings[i].started, vrings[i].enabled,
              let memory, let size = vrings[i].size, let addresses = vrings[i].addresses else { return }
        let queue: any VhostUserDeviceQueue
        let ring: UnsafeRawPointer
        do {
            let queueRing = try makeRing(i, memory: memory, size: size, addresses: addresses)
            ring = queueRing.descriptorsAddress
            queue = try device.makeQueue(index: i, ring: queueRing, kickFD: vrings[i].kickFD ?? -1, callFD: vrings[i].callFD ?? -1)
        } catch {
            guestBrokeQueue(i, "cannot start the ring: \(error)")
            return
        }
        queue.setInitialDirtyLog(dirtyLogForQueue(i))
        queue.onBroken = { [weak self] index, reason in
            Task { @ControlActor in self?.guestBrokeQueue(index, "the queue stopped (\(reason))") }
        }
        guard let thread = chosen ?? threads.ioThread(forExport: exportID, queue: i, ring: ring) else { return }
        vrings[i].running = queue
        vrings[i].thread = thread
        thread.post { thread in queue.start(on: thread) }
        logger.debug("queue started", metadata: ["queue": "\(i)", "size": "\(size)", "iothread": "\(thread.id)"])
    }

    /// The ring in the negotiated layout. SET_VRING_ADDR's three addresses are the
    /// descriptor table, avail and used rings of a split ring, or the descriptor ring, driver
    /// and device areas of a packed one.
    private func makeRing(_ i: Int, memory: GuestMemory, size: UInt32,
                          addresses: SplitVirtqueue.RingAddresses) throws -> QueueRing {
        let features = VirtqueueFeatures(negotiated: negotiatedFeatures)
        if packedRingNegotiated {
            let packed = PackedVirtqueue.RingAddresses(descriptorRing: addresses.descriptorTable,
                                                       driverArea: addresses.availableRing, deviceArea: addresses.usedRing)
            var ring = try PackedVirtqueue(memory: memory, size: size, addresses: packed, features: features,
                                           base: PackedVringBase(encoded: vrings[i].base))
            let tracker = packedInflightTracker(queue: i, ring: &ring)
            return .packed(ring, inflight: tracker)
        }
        var split = try SplitVirtqueue(memory: memory, size: size, addresses: addresses, features: features,
                                       lastAvailableIndex: UInt16(truncatingIfNeeded: vrings[i].base))
        let tracker = inflightTracker(queue: i, ring: &split)
        logger.debug("queue \(i): starting at avail index \(split.lastAvailableIndex); in guest memory: \(split.snapshot)")
        return .split(split, inflight: tracker)
    }

    /// The queue's inflight tracker (recovering what a previous process left in flight), or
    /// nil without an inflight buffer or with one that does not fit the queue.
    private func inflightTracker(queue i: Int, ring: inout SplitVirtqueue) -> InflightTracker? {
        guard let inflight else { return nil }
        do {
            let tracker = try InflightTracker(buffer: inflight, queue: i, ring: &ring)
            if tracker.recoveredCount > 0 {
                logger.notice("queue \(i): resubmitting \(tracker.recoveredCount) requests left in flight by a previous backend process; continuing at avail index \(ring.lastAvailableIndex)")
            }
            return tracker
        } catch {
            logger.error("queue \(i): \(error); the queue runs without inflight tracking, so requests in flight when this process dies may be lost")
            return nil
        }
    }

    /// The packed twin of `inflightTracker`. QEMU sends a packed ring's base as it last
    /// learnt it (stale after a backend crash): the region's used position wins.
    private func packedInflightTracker(queue i: Int, ring: inout PackedVirtqueue) -> PackedInflightTracker? {
        guard let inflight else { return nil }
        do {
            let frontendBase = ring.base
            let tracker = try PackedInflightTracker(buffer: inflight, queue: i, ring: &ring)
            if tracker.recoveredCount > 0 || ring.base != frontendBase {
                logger.notice("queue \(i): resubmitting \(tracker.recoveredCount) requests left in flight by a previous backend process; packed ring continues at \(ring.base) (the frontend's base was \(frontendBase))")
            }
            return tracker
        } catch {
            logger.error("queue \(i): \(error); the packed queue runs without inflight tracking, so requests in flight when this process dies may be lost")
            return nil
        }
    }

    /// The frontend or guest broke a ring. vhost-user has no message to set the device's
    /// NEEDS_RESET status, so: signal the ring's error eventfd if the frontend gave one
    /// (QEMU logs "vhost vring error"), then close the connection; the frontend must set the
    /// device up again. Other exports and this export's listener are unaffected.
    func guestBrokeQueue(_ i: Int, _ why: String) {
        guard !closed, vrings.indices.contains(i) else { return }
        var signalled = false
        if let errFD = vrings[i].errFD {
            var one: UInt64 = 1
            signalled = Glibc.write(errFD, &one, 8) == 8
        }
        logger.error("queue \(i): \(why); \(signalled ? "signalled the frontend's vring error eventfd and " : "")closing the connection so the frontend resets the device (the export keeps listening)")
        Task { await self.close(reason: "queue \(i) broken: \(why)") }
    }

    /// Stops a running queue after its in-flight requests complete; returns its base.
    func stopQueue(_ i: Int) async -> UInt32 {
        guard let queue = vrings[i].running, let thread = vrings[i].thread else { return vrings[i].base }
        let base = await queue.stop(on: thread)
        // Another operation (a move, GET_VRING_BASE, a disconnect) may have stopped the same
        // queue while we waited: only the first one to get here updates the ring's state.
        if vrings[i].running === queue {
            vrings[i].running = nil
            vrings[i].thread = nil
            vrings[i].base = base
            threads.queueStopped(export: exportID, queue: i, thread: thread)
        }
        return base
    }

    func stopAllQueues() async {
        for i in vrings.indices where vrings[i].running != nil { _ = await stopQueue(i) }
    }
}
