import Glibc

/// The inflight buffer (INFLIGHT_SHMFD): GET_INFLIGHT_FD allocates one for the frontend to
/// keep; SET_INFLIGHT_FD hands it (back) to us, with what a previous process left in flight.
extension VhostUserBackendSession {
    func getInflightFD(_ wanted: VhostUserInflightDescription) -> VhostUserRequestOutcome {
        guard negotiatedProtocolFeatures.contains(.inflightSHMFD) else {
            return .fatal("GET_INFLIGHT_FD without the INFLIGHT_SHMFD protocol feature")
        }
        guard wanted.numQueues <= device.queueCount else {
            return .fatal("GET_INFLIGHT_FD for \(wanted.numQueues) queues; the device has \(device.queueCount)")
        }
        do {
            let (bufferFD, description) = try InflightBuffer.allocate(queues: Int(wanted.numQueues), queueSize: Int(wanted.queueSize))
            return .reply(VhostUserReply.inflight(description, fd: bufferFD))
        } catch {
            return .fatal("GET_INFLIGHT_FD: \(error)")
        }
    }

    func setInflightFD(_ description: VhostUserInflightDescription, bufferFD: Int32) async -> VhostUserRequestOutcome {
        defer { Glibc.close(bufferFD) }
        guard negotiatedProtocolFeatures.contains(.inflightSHMFD) else {
            return .fatal("SET_INFLIGHT_FD without the INFLIGHT_SHMFD protocol feature")
        }
        let buffer: InflightBuffer
        do {
            buffer = try InflightBuffer(fd: bufferFD, description: description, maxQueues: device.queueCount)
        } catch {
            return .failed("cannot use the inflight buffer: \(error); queues run without crash recovery")
        }
        // Queues running on the old buffer finish their requests first, then move over.
        let wasRunning = vrings.indices.filter { vrings[$0].running != nil }
        for i in wasRunning { _ = await stopQueue(i) }
        inflight = buffer
        for i in wasRunning { startQueueIfReady(i) }
        return .done
    }
}
