import ControlThread
import CSpindle
import Glibc
import IOThreads
import Logging

/// One frontend's vhost-user session with a device, on the control thread: it reads the
/// frontend's messages, handles them strictly in order through the per-topic handlers
/// (`VhostUserBackendSession+*.swift`) and keeps the session's state; the device
/// (`VhostUserDevice`) supplies features, config space and the queues. A handler that must
/// wait for an IOThread (GET_VRING_BASE stopping a ring, a memory table change) suspends
/// the message loop, not the thread.
///
/// Where things go: one file per topic, routed from `dispatch` (+Dispatch.swift). Dirty
/// logging for live migration (SET_LOG_BASE, SET_LOG_FD, the LOG_ALL feature, the per-ring
/// log flag of SET_VRING_ADDR) is `+DirtyLog.swift`: the log is mapped here and handed to
/// the queues.
@ControlActor
public final class VhostUserBackendSession {
    /// Protocol features the session implements; the device may withhold some.
    public static let implementedProtocolFeatures: VhostUserProtocolFeatures =
        [.mq, .logSHMFD, .replyAck, .backendReq, .config, .configureMemSlots, .inflightSHMFD]
    /// Memory slots offered with CONFIGURE_MEM_SLOTS.
    static let maxMemorySlots: UInt64 = UInt64(GuestMemory.maximumRegions)

    /// Names the session to the IOThread provider (the export's id).
    public let exportID: String
    let device: any VhostUserDevice
    let threads: any IOThreadProvider
    let logger: Logger
    /// Protocol features offered: implemented minus what the device withholds.
    let offeredProtocolFeatures: VhostUserProtocolFeatures
    private let fd: Int32
    private let reader: VhostUserMessageReader
    private var watch: FileDescriptorWatch?
    private let onClosed: @ControlActor (VhostUserBackendSession) -> Void

    private var pending: [VhostUserMessage] = []
    private var processing = false
    private var streamEnd: VhostUserStreamEnd?
    private(set) var closed = false
    /// `close` has stopped every queue and released what the frontend gave (a handler
    /// resuming later releases what it stored itself).
    private var released = false

    var negotiatedFeatures: UInt64 = 0
    var negotiatedProtocolFeatures: VhostUserProtocolFeatures = []
    var memory: GuestMemory?
    var vrings: [VringSetup]
    var backendChannelFD: Int32?
    /// The inflight buffer SET_INFLIGHT_FD shared (INFLIGHT_SHMFD).
    var inflight: InflightBuffer?
    /// The dirty log SET_LOG_BASE shared (LOG_SHMFD); marked while LOG_ALL is negotiated.
    var dirtyLog: DirtyLog?

    /// Takes over the connected socket `fd` (closed when the session ends) and starts reading.
    /// `onClosed` runs once the session has closed and released everything.
    public init(socket fd: Int32, exportID: String, device: any VhostUserDevice, threads: any IOThreadProvider,
                logger: Logger, onClosed: @escaping @ControlActor (VhostUserBackendSession) -> Void) throws(ControlLoopError) {
        self.fd = fd
        self.exportID = exportID
        self.device = device
        self.threads = threads
        self.logger = logger
        self.onClosed = onClosed
        offeredProtocolFeatures = Self.implementedProtocolFeatures.subtracting(device.withheldProtocolFeatures)
        reader = VhostUserMessageReader(socket: fd)
        vrings = Array(repeating: VringSetup(), count: device.queueCount)
        watch = try ControlExecutor.shared.watch(fd: fd, events: EPOLLIN.rawValue | EPOLLRDHUP.rawValue) { [weak self] _ in
            self?.readMessages()
        }
    }

    /// Whether the session has closed (the socket and every fd released).
    public var isClosed: Bool { closed }

    /// Whether the frontend has hung up (closed or shut down its sending side), whether or not
    /// the session has read up to that end yet. POLLRDHUP is exact here: it is set once the peer
    /// can send nothing more, even with unread messages still queued (a MSG_PEEK recv would
    /// only see the end after those).
    public var peerHasHungUp: Bool {
        guard !closed else { return true }
        var poller = pollfd(fd: fd, events: Int16(POLLRDHUP), revents: 0)
        guard poll(&poller, 1, 0) == 1 else { return false }
        return poller.revents & Int16(POLLRDHUP | POLLHUP | POLLERR) != 0
    }

    /// Reads what is queued up to the frontend's end now instead of waiting for the control
    /// loop's next turn, so the session starts closing without delay (the export holds the
    /// next frontend until it has).
    public func readUpToHangUp() {
        readMessages()
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
        let outcome = await dispatch(request, payload: message.payload)
        if closed {
            // The session closed while this message waited for an IOThread (a broken queue,
            // the export going away): what its handler stored since then (a new memory table,
            // an inflight buffer, eventfds) must not outlive the close, or the guest's memory
            // would stay mapped for as long as anything holds the session.
            if released { releaseFrontendResources() }
            if case .reply(var reply) = outcome { reply.closeFileDescriptors() }
            return
        }
        switch outcome {
        case .reply(var reply):
            send(reply)
            reply.closeFileDescriptors()  // the frontend has its own copies now
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

    // MARK: closing

    /// Stops every ring (completing in-flight requests), unmaps guest memory, closes the
    /// socket and every fd the frontend gave us, then tells the owner (`onClosed`).
    public func close(reason: String) async {
        guard !closed else { return }
        closed = true
        if let watch { ControlExecutor.shared.unwatch(watch) }
        watch = nil
        await stopAllQueues()
        releaseFrontendResources()
        released = true
        for var message in pending { message.closeFileDescriptors() }
        pending.removeAll()
        Glibc.close(fd)
        logger.info("frontend disconnected: \(reason)")
        onClosed(self)
    }

    /// Drops what the frontend gave the session: eventfds, the backend channel, the guest
    /// memory table (unmapped once no stopped queue holds it), the inflight buffer and the
    /// dirty log. Only once no queue runs.
    private func releaseFrontendResources() {
        for i in vrings.indices { vrings[i].closeFDs() }
        if let channel = backendChannelFD { Glibc.close(channel) }
        backendChannelFD = nil
        memory = nil
        inflight = nil
        dirtyLog = nil  // every queue has stopped: nothing marks it any more
    }
}
