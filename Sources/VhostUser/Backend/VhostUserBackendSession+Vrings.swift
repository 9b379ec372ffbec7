import Glibc

/// Ring setup from the frontend: SET_VRING_NUM/ADDR/BASE/KICK/CALL/ERR/ENABLE and
/// GET_VRING_BASE. A ring starts once it has everything (`startQueueIfReady`, +Queues.swift).
extension VhostUserBackendSession {
    /// A packed ring (VIRTIO_F_RING_PACKED negotiated, which QEMU does before it sets rings
    /// up) may have any size up to 32768; a split ring a power of two.
    func setVringNum(_ state: VhostUserVringState) -> VhostUserRequestOutcome {
        guard let i = queueIndex(state.index) else { return .failed("queue \(state.index) does not exist (the export has \(vrings.count))") }
        if packedRingNegotiated {
            guard PackedVirtqueueLayout.isValidSize(state.num) else {
                return .failed("queue \(i): size \(state.num) of a packed ring is not between 1 and 32768")
            }
        } else {
            guard state.num >= 1, state.num <= 32768, state.num & (state.num - 1) == 0 else {
                return .failed("queue \(i): size \(state.num) is not a power of two between 1 and 32768")
            }
        }
        vrings[i].size = state.num
        return .done
    }

    /// Stored for the next start. On a running ring QEMU sends the same ring addresses with
    /// only the log flag and address changed (migration starting or ending): that reaches
    /// the running queue before the ack. New ring addresses on a running ring (not something
    /// QEMU does) stop it, its in-flight requests complete, and it restarts on the new ring
    /// at the same avail index, as after a memory table change.
    func setVringAddr(_ address: VhostUserVringAddress) async -> VhostUserRequestOutcome {
        guard let i = queueIndex(address.index) else { return .failed("queue \(address.index) does not exist") }
        let addresses = SplitVirtqueue.RingAddresses(descriptorTable: address.descUserAddr,
                                                     availableRing: address.availUserAddr,
                                                     usedRing: address.usedUserAddr)
        let moved = vrings[i].addresses != addresses
        vrings[i].addresses = addresses
        let logged = address.flags & VhostUserVringAddress.flagLog != 0
        vrings[i].usedRingLogAddress = logged ? address.logGuestAddr : nil
        guard let queue = vrings[i].running, let thread = vrings[i].thread else { return .done }
        if moved {
            logger.warning("queue \(i): SET_VRING_ADDR moved a running ring; restarting it on the new addresses after its in-flight requests complete")
            _ = await stopQueue(i)
            startQueueIfReady(i)
        } else {
            await queue.replaceDirtyLog(dirtyLogForQueue(i), on: thread)
        }
        return .done
    }

    /// Split: the avail index. Packed: avail and used positions with their wrap counters
    /// (`PackedVringBase`; checked against the ring size when the ring starts).
    func setVringBase(_ state: VhostUserVringState) -> VhostUserRequestOutcome {
        guard let i = queueIndex(state.index) else { return .failed("queue \(state.index) does not exist") }
        if packedRingNegotiated {
            vrings[i].base = state.num
            logger.info("queue \(i): SET_VRING_BASE \(PackedVringBase(encoded: state.num)) (packed ring)")
            return .done
        }
        guard state.num <= UInt32(UInt16.max) else { return .failed("queue \(i): base \(state.num) is out of range") }
        vrings[i].base = state.num
        logger.info("queue \(i): SET_VRING_BASE \(state.num)")
        return .done
    }

    /// The spec: stop the ring, complete its in-flight requests, then report the index.
    func getVringBase(_ state: VhostUserVringState) async -> VhostUserRequestOutcome {
        guard let i = queueIndex(state.index) else { return .fatal("GET_VRING_BASE for queue \(state.index), which does not exist") }
        let base = await stopQueue(i)
        vrings[i].started = false
        if let kick = vrings[i].kickFD { Glibc.close(kick) }
        if let call = vrings[i].callFD { Glibc.close(call) }
        vrings[i].kickFD = nil
        vrings[i].callFD = nil
        // The queue marked everything it wrote before it reported the base (finishStop).
        logger.info("queue \(i): GET_VRING_BASE answered \(base)")
        logRingSnapshot(i, "stopped", deviceIndex: base)
        return .reply(VhostUserReply.vringState(.getVringBase, VhostUserVringState(index: state.index, num: base)))
    }

    func setVringKick(_ file: VhostUserVringFile) async -> VhostUserRequestOutcome {
        guard let i = queueIndex(of: file) else { return .failed("queue \(file.index) does not exist") }
        // No fd (VHOST_USER_VRING_NOFD_MASK): the frontend will not kick; the ring is polled
        // on its IOThread instead (VirtqueueServer.kicklessPollInterval).
        if vrings[i].running != nil { _ = await stopQueue(i) }
        if let old = vrings[i].kickFD { Glibc.close(old) }
        vrings[i].kickFD = file.fd
        vrings[i].started = true
        // Without PROTOCOL_FEATURES a ring is enabled as soon as it starts (the spec).
        if !protocolFeaturesNegotiated { vrings[i].enabled = true }
        startQueueIfReady(i)
        return .done
    }

    func setVringCall(_ file: VhostUserVringFile) async -> VhostUserRequestOutcome {
        guard let i = queueIndex(of: file) else { return .failed("queue \(file.index) does not exist") }
        let old = vrings[i].callFD
        vrings[i].callFD = file.fd
        if let queue = vrings[i].running, let thread = vrings[i].thread {
            // The IOThread may be signalling the old eventfd: swap there, close after.
            await queue.replaceCallFD(file.fd ?? -1, on: thread)
        }
        if let old { Glibc.close(old) }
        return .done
    }

    func setVringErr(_ file: VhostUserVringFile) -> VhostUserRequestOutcome {
        guard let i = queueIndex(of: file) else { return .failed("queue \(file.index) does not exist") }
        if let old = vrings[i].errFD { Glibc.close(old) }
        vrings[i].errFD = file.fd
        return .done
    }

    func setVringEnable(_ state: VhostUserVringState) async -> VhostUserRequestOutcome {
        guard let i = queueIndex(state.index) else { return .failed("queue \(state.index) does not exist") }
        // The spec knows 0 and 1 only; anything else leaves the ring as it was.
        guard state.num <= 1 else { return .failed("queue \(i): SET_VRING_ENABLE with \(state.num) (only 0 and 1 are defined)") }
        vrings[i].enabled = state.num == 1
        if vrings[i].enabled {
            startQueueIfReady(i)
        } else if vrings[i].running != nil {
            vrings[i].base = await stopQueue(i)
        }
        return .done
    }

    /// The ring a SET_VRING_KICK/CALL/ERR names; nil (its fd closed: nobody else will) if
    /// there is no such ring.
    private func queueIndex(of file: VhostUserVringFile) -> Int? {
        guard let i = queueIndex(UInt32(file.index)) else {
            if let fd = file.fd { Glibc.close(fd) }
            return nil
        }
        return i
    }
}
