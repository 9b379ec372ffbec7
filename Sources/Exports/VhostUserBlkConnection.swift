import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import Logging
import VhostUser
import VirtioBlk

/// One frontend's vhost-user session with an export, on the control thread. Messages are
/// handled strictly in order; a handler that must wait for an IOThread (GET_VRING_BASE
/// stopping a ring, a memory table change) suspends the message loop, not the thread.
@ControlActor
final class VhostUserBlkConnection {
    /// Protocol features Spindle offers. The export's `x-inflight=off` (TEST ONLY) withholds
    /// INFLIGHT_SHMFD, to show what a crash does to a frontend that rewinds the ring.
    private var offeredProtocolFeatures: VhostUserProtocolFeatures {
        var features: VhostUserProtocolFeatures = [.mq, .replyAck, .backendReq, .config, .configureMemSlots, .inflightSHMFD]
        if !export.options.inflightTracking { features.remove(.inflightSHMFD) }
        return features
    }
    /// Memory slots offered with CONFIGURE_MEM_SLOTS.
    static let maxMemorySlots: UInt64 = UInt64(GuestMemory.maximumRegions)

    private let fd: Int32
    private unowned let export: VhostUserBlkExport
    private let reader: VhostUserMessageReader
    private var watch: FileDescriptorWatch?
    private var logger: Logger

    private var pending: [VhostUserMessage] = []
    private var processing = false
    private var streamEnd: VhostUserStreamEnd?
    private var closed = false

    private var negotiatedFeatures: UInt64 = 0
    private var negotiatedProtocolFeatures: VhostUserProtocolFeatures = []
    private var memory: GuestMemory?
    private var vrings: [VringSetup]
    private var backendChannelFD: Int32?
    /// The inflight buffer SET_INFLIGHT_FD shared (INFLIGHT_SHMFD).
    private var inflight: InflightBuffer?

    init(fd: Int32, export: VhostUserBlkExport) throws {
        self.fd = fd
        self.export = export
        self.logger = export.logger
        reader = VhostUserMessageReader(socket: fd)
        vrings = Array(repeating: VringSetup(), count: Int(export.device.numQueues))
        watch = try ControlExecutor.shared.watch(fd: fd, events: EPOLLIN.rawValue | EPOLLRDHUP.rawValue) { [weak self] _ in
            self?.readMessages()
        }
    }

    private var device: VirtioBlkDevice { export.device }
    private var protocolFeaturesNegotiated: Bool {
        negotiatedFeatures & VhostUserFeatureBits.protocolFeatures != 0
    }

    // MARK: reading and the message loop

    private func readMessages() {
        guard !closed, streamEnd == nil else { return }
        let result = reader.readAvailable()
        pending.append(contentsOf: result.messages)
        if let end = result.end {
            streamEnd = end
            if let watch { ControlExecutor.shared.unwatch(watch) }
            watch = nil
        }
        startProcessing()
    }

    private func startProcessing() {
        guard !processing else { return }
        processing = true
        Task { @ControlActor in await self.processPending() }
    }

    private func processPending() async {
        while !closed, !pending.isEmpty {
            let message = pending.removeFirst()
            await handle(message)
        }
        processing = false
        if !closed, let end = streamEnd {
            switch end {
            case .peerClosed: await close(reason: "frontend disconnected")
            default: await close(reason: end.description)
            }
        }
    }

    private func handle(_ message: VhostUserMessage) async {
        let name = message.requestCode.map { "\($0)" } ?? "request \(message.header.request)"
        let wantsAck = message.header.flags.contains(.needReply) && negotiatedProtocolFeatures.contains(.replyAck)
        let request: VhostUserRequest
        do {
            request = try VhostUserRequest.decode(message)
        } catch {
            logger.error("malformed vhost-user message from the frontend: \(error); closing the connection (the export keeps listening)")
            await close(reason: "malformed \(name)")
            return
        }
        logger.trace("vhost-user request", metadata: ["request": "\(name)"])
        let outcome = await dispatch(request)
        switch outcome {
        case .replied:
            break
        case .done:
            if wantsAck { send(ack(message, success: true)) }
        case .failed(let why):
            logger.error("\(name) failed: \(why)")
            if wantsAck { send(ack(message, success: false)) }
        case .fatal(let why):
            logger.error("\(name): \(why); closing the connection (the export keeps listening)")
            await close(reason: why)
        }
    }

    private enum Outcome {
        case done, replied
        case failed(String)
        case fatal(String)
    }

    private func dispatch(_ request: VhostUserRequest) async -> Outcome {
        switch request {
        case .getFeatures:
            return reply(VhostUserReply.u64(.getFeatures, device.offeredFeatures | VhostUserFeatureBits.protocolFeatures))
        case .setFeatures(let features):
            let offered = device.offeredFeatures | VhostUserFeatureBits.protocolFeatures
            guard features & ~offered == 0 else {
                return .fatal("frontend accepted features 0x\(String(features, radix: 16)) that were never offered (offered 0x\(String(offered, radix: 16)))")
            }
            negotiatedFeatures = features
            return .done
        case .getProtocolFeatures:
            return reply(VhostUserReply.u64(.getProtocolFeatures, offeredProtocolFeatures.rawValue))
        case .setProtocolFeatures(let features):
            negotiatedProtocolFeatures = VhostUserProtocolFeatures(rawValue: features).intersection(offeredProtocolFeatures)
            return .done
        case .setOwner:
            return .done
        case .resetOwner, .resetDevice:
            await stopAllQueues()
            for i in vrings.indices { vrings[i].closeFDs(); vrings[i] = VringSetup() }
            negotiatedFeatures = 0
            inflight = nil
            return .done
        case .getQueueNum:
            return reply(VhostUserReply.u64(.getQueueNum, UInt64(device.numQueues)))
        case .getMaxMemSlots:
            return reply(VhostUserReply.u64(.getMaxMemSlots, Self.maxMemorySlots))
        case .setMemTable(let regions):
            do {
                let table = try GuestMemory.map(regions.map { (region: $0.region, fd: $0.fd) })
                await replaceMemory(with: table)
                return .done
            } catch {
                return .failed("cannot map the guest memory table: \(error)")
            }
        case .addMemReg(let region):
            do {
                let mapping = try GuestMemoryMapping.map(region.region, fd: region.fd)
                await replaceMemory(with: try (memory ?? GuestMemory()).adding(mapping))
                return .done
            } catch {
                return .failed("cannot add guest memory region: \(error)")
            }
        case .remMemReg(let region):
            guard let current = memory, let reduced = current.removing(region) else {
                return .failed("no mapped guest memory region matches \(region)")
            }
            await replaceMemory(with: reduced)
            return .done
        case .setVringNum(let state):
            guard let i = queueIndex(state.index) else { return .failed("queue \(state.index) does not exist (the export has \(vrings.count))") }
            guard state.num >= 1, state.num <= 32768, state.num & (state.num - 1) == 0 else {
                return .failed("queue \(i): size \(state.num) is not a power of two between 1 and 32768")
            }
            vrings[i].size = state.num
            return .done
        case .setVringAddr(let address):
            guard let i = queueIndex(address.index) else { return .failed("queue \(address.index) does not exist") }
            vrings[i].addresses = SplitVirtqueue.RingAddresses(descriptorTable: address.descUserAddr,
                                                                availableRing: address.availUserAddr,
                                                                usedRing: address.usedUserAddr)
            return .done
        case .setVringBase(let state):
            guard let i = queueIndex(state.index) else { return .failed("queue \(state.index) does not exist") }
            guard state.num <= UInt32(UInt16.max) else { return .failed("queue \(i): base \(state.num) is out of range") }
            vrings[i].base = UInt16(state.num)
            return .done
        case .getVringBase(let state):
            guard let i = queueIndex(state.index) else { return .fatal("GET_VRING_BASE for queue \(state.index), which does not exist") }
            // The spec: stop the ring, complete its in-flight requests, then report the index.
            let base = await stopQueue(i)
            vrings[i].started = false
            if let kick = vrings[i].kickFD { Glibc.close(kick) }
            if let call = vrings[i].callFD { Glibc.close(call) }
            vrings[i].kickFD = nil
            vrings[i].callFD = nil
            return reply(VhostUserReply.vringState(.getVringBase, VhostUserVringState(index: state.index, num: UInt32(base))))
        case .setVringKick(let file):
            guard let i = queueIndex(UInt32(file.index)) else {
                if let fd = file.fd { Glibc.close(fd) }
                return .failed("queue \(file.index) does not exist")
            }
            guard let kick = file.fd else {
                return .failed("queue \(i): polling mode without a kick eventfd is not supported")
            }
            if vrings[i].running != nil { _ = await stopQueue(i) }
            if let old = vrings[i].kickFD { Glibc.close(old) }
            vrings[i].kickFD = kick
            vrings[i].started = true
            if !protocolFeaturesNegotiated { vrings[i].enabled = true }
            startQueueIfReady(i)
            return .done
        case .setVringCall(let file):
            guard let i = queueIndex(UInt32(file.index)) else {
                if let fd = file.fd { Glibc.close(fd) }
                return .failed("queue \(file.index) does not exist")
            }
            let old = vrings[i].callFD
            vrings[i].callFD = file.fd
            if let queue = vrings[i].running, let thread = vrings[i].thread {
                // The IOThread may be signalling the old eventfd: swap there, close after.
                await queue.replaceCallFD(file.fd ?? -1, on: thread)
            }
            if let old { Glibc.close(old) }
            return .done
        case .setVringErr(let file):
            guard let i = queueIndex(UInt32(file.index)) else {
                if let fd = file.fd { Glibc.close(fd) }
                return .failed("queue \(file.index) does not exist")
            }
            if let old = vrings[i].errFD { Glibc.close(old) }
            vrings[i].errFD = file.fd
            return .done
        case .setVringEnable(let state):
            guard let i = queueIndex(state.index) else { return .failed("queue \(state.index) does not exist") }
            vrings[i].enabled = state.num == 1
            if vrings[i].enabled {
                startQueueIfReady(i)
            } else if vrings[i].running != nil {
                vrings[i].base = await stopQueue(i)
            }
            return .done
        case .setBackendReqFD(let channel):
            if let old = backendChannelFD { Glibc.close(old) }
            backendChannelFD = channel
            return .done
        case .getConfig(let window):
            guard let bytes = device.readConfig(offset: Int(window.offset), size: Int(window.size)) else {
                logger.warning("GET_CONFIG outside the config space (offset \(window.offset), size \(window.size))")
                return reply(VhostUserReply.configFailure())
            }
            return reply(VhostUserReply.config(VhostUserConfigSpace(offset: window.offset, flags: window.flags, payload: bytes)))
        case .setConfig(let window):
            let wce = negotiatedFeatures & (1 << VirtioBlkFeature.configWCE) != 0
            guard device.writeConfig(offset: Int(window.offset), bytes: window.payload, configWCENegotiated: wce) else {
                return .failed("SET_CONFIG of \(window.size) bytes at offset \(window.offset) touches read-only config fields")
            }
            return .done
        case .setVringEndian:
            return .failed("legacy (big-endian) rings are not supported")
        case .getInflightFD(let wanted):
            guard negotiatedProtocolFeatures.contains(.inflightSHMFD) else {
                return .fatal("GET_INFLIGHT_FD without the INFLIGHT_SHMFD protocol feature")
            }
            guard wanted.numQueues <= device.numQueues else {
                return .fatal("GET_INFLIGHT_FD for \(wanted.numQueues) queues; the device has \(device.numQueues)")
            }
            do {
                let (bufferFD, description) = try InflightBuffer.allocate(queues: Int(wanted.numQueues), queueSize: Int(wanted.queueSize))
                send(VhostUserReply.inflight(description, fd: bufferFD))
                Glibc.close(bufferFD)
                return .replied
            } catch {
                return .fatal("GET_INFLIGHT_FD: \(error)")
            }
        case .setInflightFD(let description, let bufferFD):
            defer { Glibc.close(bufferFD) }
            guard negotiatedProtocolFeatures.contains(.inflightSHMFD) else {
                return .fatal("SET_INFLIGHT_FD without the INFLIGHT_SHMFD protocol feature")
            }
            let buffer: InflightBuffer
            do {
                buffer = try InflightBuffer(fd: bufferFD, description: description, maxQueues: Int(device.numQueues))
            } catch {
                return .failed("cannot use the inflight buffer: \(error); queues run without crash recovery")
            }
            // Queues running on the old buffer finish their requests first, then move over.
            let wasRunning = vrings.indices.filter { vrings[$0].running != nil }
            for i in wasRunning { _ = await stopQueue(i) }
            inflight = buffer
            for i in wasRunning { startQueueIfReady(i) }
            return .done
        case .setLogBase, .setLogFD, .vringKick, .setStatus, .getStatus:
            request.closeFileDescriptors()
            return .fatal("\(request) needs a protocol feature Spindle did not offer")
        case .unsupported(let code):
            return .fatal("\(code) is not supported by a vhost-user-blk backend")
        case .unknown(let code):
            return .fatal("unknown request code \(code)")
        }
    }

    private func reply(_ message: VhostUserMessage) -> Outcome {
        send(message)
        return .replied
    }

    private func ack(_ message: VhostUserMessage, success: Bool) -> VhostUserMessage {
        guard let code = message.requestCode else { return VhostUserReply.ackFailure(rawRequest: message.header.request) }
        return VhostUserReply.ack(code, success: success)
    }

    private func send(_ message: VhostUserMessage) {
        guard !closed else { return }
        let bytes = message.encoded
        let rc = bytes.withUnsafeBytes { raw in
            message.fds.withUnsafeBufferPointer { fds in
                spindle_send_with_fds(fd, raw.baseAddress, raw.count, fds.baseAddress, Int32(fds.count))
            }
        }
        if rc != bytes.count {
            logger.error("cannot send a reply to the frontend: \(rc < 0 ? String(cString: strerror(Int32(-rc))) : "short write")")
        }
    }

    private func queueIndex(_ raw: UInt32) -> Int? {
        raw < UInt32(vrings.count) ? Int(raw) : nil
    }

    // MARK: queues

    /// Moves a running queue to another IOThread: it stops on its current thread (taking no
    /// new requests, its in-flight ones complete), then starts on `thread` at the same avail
    /// index. Nothing is lost or completed twice. Returns false if the queue is not running.
    func moveQueue(_ i: Int, to thread: IOThread) async -> Bool {
        guard vrings.indices.contains(i), vrings[i].running != nil, !closed else { return false }
        _ = await stopQueue(i)
        startQueueIfReady(i, on: thread)
        return vrings[i].running != nil
    }

    private func startQueueIfReady(_ i: Int, on chosen: IOThread? = nil) {
        guard !closed, vrings[i].running == nil, vrings[i].started, vrings[i].enabled,
              let memory, let size = vrings[i].size, let addresses = vrings[i].addresses, let kick = vrings[i].kickFD else { return }
        do {
            var ring = try SplitVirtqueue(memory: memory, size: size, addresses: addresses,
                                          features: VirtqueueFeatures(negotiated: negotiatedFeatures),
                                          lastAvailableIndex: vrings[i].base)
            let tracker = inflightTracker(queue: i, ring: &ring)
            let queue = VirtioBlkQueue(device: device, index: i, ring: ring, kickFD: kick, callFD: vrings[i].callFD ?? -1,
                                       inflight: tracker)
            queue.onBroken = { [weak self] index, _ in
                Task { @ControlActor in self?.guestBrokeQueue(index, "the guest driver corrupted the ring") }
            }
            guard let thread = chosen ?? export.threads.ioThread(forExport: export.options.id, queue: i, ring: ring.descriptorTableAddress) else { return }
            vrings[i].running = queue
            vrings[i].thread = thread
            thread.post { thread in queue.start(on: thread) }
            logger.debug("queue started", metadata: ["queue": "\(i)", "size": "\(size)", "iothread": "\(thread.id)"])
        } catch {
            guestBrokeQueue(i, "cannot start the ring: \(error)")
        }
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

    /// The frontend or guest broke a ring. vhost-user has no message to set the device's
    /// NEEDS_RESET status, so: signal the ring's error eventfd if the frontend gave one
    /// (QEMU logs "vhost vring error"), then close the connection; the frontend must set the
    /// device up again. Other exports and this export's listener are unaffected.
    private func guestBrokeQueue(_ i: Int, _ why: String) {
        guard !closed, vrings.indices.contains(i) else { return }
        var signalled = false
        if let errFD = vrings[i].errFD {
            var one: UInt64 = 1
            signalled = Glibc.write(errFD, &one, 8) == 8
        }
        logger.error("queue \(i): \(why); \(signalled ? "signalled the frontend's vring error eventfd and " : "")closing the connection so the frontend resets the device (the export keeps listening)")
        Task { await self.close(reason: "queue \(i) broken: \(why)") }
    }

    /// Stops a running queue after its in-flight requests complete; returns its next avail index.
    private func stopQueue(_ i: Int) async -> UInt16 {
        guard let queue = vrings[i].running, let thread = vrings[i].thread else { return vrings[i].base }
        let base = await queue.stop(on: thread)
        // Another operation (a move, GET_VRING_BASE, a disconnect) may have stopped the same
        // queue while we waited: only the first one to get here updates the ring's state.
        if vrings[i].running === queue {
            vrings[i].running = nil
            vrings[i].thread = nil
            vrings[i].base = base
            export.threads.queueStopped(export: export.options.id, queue: i, thread: thread)
        }
        return base
    }

    private func stopAllQueues() async {
        for i in vrings.indices where vrings[i].running != nil { _ = await stopQueue(i) }
    }

    /// Swaps the guest memory table. Rings running on the old table are stopped first (their
    /// in-flight requests complete) and restarted on the new one at the same index.
    private func replaceMemory(with table: GuestMemory) async {
        let wasRunning = vrings.indices.filter { vrings[$0].running != nil }
        for i in wasRunning { _ = await stopQueue(i) }
        memory = table
        for i in wasRunning { startQueueIfReady(i) }
    }

    /// Tells the frontend the config space changed (BACKEND_CONFIG_CHANGE_MSG on the backend
    /// channel) so it raises the guest's config interrupt. Never waits for a reply: QEMU
    /// answers with a GET_CONFIG on the main socket while it handles this message.
    func notifyConfigChange() -> Bool {
        guard !closed, let channel = backendChannelFD,
              negotiatedProtocolFeatures.contains(.config), negotiatedProtocolFeatures.contains(.backendReq) else { return false }
        let message = VhostUserBackendMessage.configChange(needReply: false)
        let bytes = message.encoded
        let rc = bytes.withUnsafeBytes { spindle_send_with_fds(channel, $0.baseAddress, $0.count, nil, 0) }
        if rc != bytes.count {
            logger.warning("cannot send CONFIG_CHANGE_MSG on the backend channel: \(rc < 0 ? String(cString: strerror(Int32(-rc))) : "short write")")
            return false
        }
        return true
    }

    func resumeQueuesAfterDrain() {
        for setup in vrings {
            guard let queue = setup.running, let thread = setup.thread else { continue }
            thread.post { _ in queue.resumeAfterDrain() }
        }
    }

    // MARK: closing

    /// Stops every ring (completing in-flight requests), unmaps guest memory, closes the
    /// socket and every fd the frontend gave us. The export then accepts a new frontend.
    func close(reason: String) async {
        guard !closed else { return }
        closed = true
        if let watch { ControlExecutor.shared.unwatch(watch) }
        watch = nil
        await stopAllQueues()
        for i in vrings.indices { vrings[i].closeFDs() }
        if let channel = backendChannelFD { Glibc.close(channel) }
        backendChannelFD = nil
        memory = nil
        inflight = nil
        for var message in pending { message.closeFileDescriptors() }
        pending.removeAll()
        Glibc.close(fd)
        logger.info("frontend disconnected: \(reason)")
        export.connectionClosed(self)
    }
}
