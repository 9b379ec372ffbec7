import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// A vhost-user-blk frontend: the part QEMU plays. Connects to a backend's socket,
/// negotiates features, shares memfd memory, sets up and starts the virtqueues; the
/// caller then drives `queues` (one thread each) and hands them back to `shutdown`.
///
/// Every reply is checked (code, size, fds, REPLY_ACK status); any problem is a
/// `FrontendError` with one line saying which step failed and why.
///
/// Dirty logging for migration (`FrontendOptions.dirtyLogging`, `startDirtyLog` and the
/// rest in VhostUserBlkFrontend+DirtyLog.swift) follows QEMU's message orders.
public final class VhostUserBlkFrontend {
    public let options: FrontendOptions
    /// GET_FEATURES as offered, and what SET_FEATURES accepted.
    public let offeredFeatures: UInt64
    public let negotiatedFeatures: UInt64
    /// Protocol features negotiated (empty if the backend has none).
    public let protocolFeatures: VhostUserProtocolFeatures
    /// GET_QUEUE_NUM (1 without the MQ protocol feature).
    public let backendQueueCount: Int
    /// GET_CONFIG, when the CONFIG protocol feature was negotiated.
    public let config: BlkDeviceConfig?
    /// The started queues, in queue-index order.
    public let queues: [BlkQueue]
    public let memory: SharedMemoryRegion
    /// The inflight buffer (with `inflightTracking`), kept to hand back on a reconnect.
    public let inflightFD: Int32?
    public let inflightDescription: VhostUserInflightDescription?

    /// The log the backend marks while dirty logging is on (nil when off); see
    /// VhostUserBlkFrontend+DirtyLog.swift.
    public internal(set) var dirtyLog: FrontendDirtyLog?
    /// VHOST_F_LOG_ALL as last sent in SET_FEATURES, VHOST_VRING_F_LOG in SET_VRING_ADDR.
    public internal(set) var logAllSent = false
    public internal(set) var vringLogFlagSent = false

    let channel: FrontendChannel
    private let notifiers: QueueNotifiers
    private let usesProtocolFeatures: Bool
    private var isShutDown = false

    /// What a reconnect carries over from the previous session: QEMU keeps guest memory, the
    /// rings (the driver's view of them) and the inflight buffer when its backend dies.
    struct Resumption {
        let memory: SharedMemoryRegion
        let notifiers: QueueNotifiers
        let queues: [BlkQueue]
        let inflight: (fd: Int32, description: VhostUserInflightDescription)?
    }

    public convenience init(socketPath: String, options: FrontendOptions) throws(FrontendError) {
        try self.init(socketPath: socketPath, options: options, resuming: nil)
    }

    /// Connects again after the backend died, as QEMU's chardev reconnect does: the same
    /// memory, rings and inflight buffer (SET_INFLIGHT_FD with the old content); each ring's
    /// base is its used index (QEMU's rewind when GET_VRING_BASE failed). `queues` are the
    /// driver's current copies. This session's fds stay open until it is released.
    public func reconnect(socketPath: String, queues: [BlkQueue]) throws(FrontendError) -> VhostUserBlkFrontend {
        var inflight: (fd: Int32, description: VhostUserInflightDescription)?
        if let inflightFD, let inflightDescription {
            let copy = dup(inflightFD)
            guard copy >= 0 else { throw FrontendError("cannot duplicate the inflight buffer fd: \(errnoText(errno))") }
            inflight = (copy, inflightDescription)
        }
        return try VhostUserBlkFrontend(socketPath: socketPath, options: options,
                                        resuming: Resumption(memory: memory, notifiers: notifiers, queues: queues, inflight: inflight))
    }

    init(socketPath: String, options: FrontendOptions, resuming: Resumption?) throws(FrontendError) {
        try options.validate()
        self.options = options
        let channel = try FrontendChannel(path: socketPath, timeoutMilliseconds: options.replyTimeoutMilliseconds)
        self.channel = channel

        // Discovery, in the order QEMU uses.
        let offered = try channel.callU64(.getFeatures)
        offeredFeatures = offered
        usesProtocolFeatures = offered & VhostUserFeatureBits.protocolFeatures != 0
        var negotiatedProtocol: VhostUserProtocolFeatures = []
        if usesProtocolFeatures {
            let offeredProtocol = try channel.callU64(.getProtocolFeatures)
            negotiatedProtocol = FeatureNegotiation.protocolFeatures(offered: offeredProtocol,
                                                                     inflightTracking: options.inflightTracking,
                                                                     dirtyLogging: options.dirtyLogging != .off)
            try channel.send(.setProtocolFeatures(negotiatedProtocol.rawValue))
            channel.replyAckNegotiated = negotiatedProtocol.contains(.replyAck)
        }
        protocolFeatures = negotiatedProtocol
        var queueCount = 1
        if negotiatedProtocol.contains(.mq) {
            let count = try channel.callU64(.getQueueNum)
            guard count >= 1, count <= 1024 else { throw FrontendError("GET_QUEUE_NUM: backend reports \(count) queues") }
            queueCount = Int(count)
        }
        backendQueueCount = queueCount
        if negotiatedProtocol.contains(.configureMemSlots) {
            let slots = try channel.callU64(.getMaxMemSlots)
            guard slots >= 1 else { throw FrontendError("GET_MAX_MEM_SLOTS: backend accepts no memory regions") }
        }
        try channel.send(.setOwner)
        config = negotiatedProtocol.contains(.config) ? try Self.readConfig(channel) : nil

        // Feature and queue-count checks before anything is set up.
        negotiatedFeatures = try FeatureNegotiation.deviceFeatures(offered: offered, options: options)
        if options.queueCount > 1 {
            guard negotiatedFeatures & FeatureNegotiation.bit(VirtioFeatureBit.multiQueue) != 0 else {
                throw FrontendError("\(options.queueCount) queues wanted but the backend does not offer VIRTIO_BLK_F_MQ")
            }
        }
        let deviceQueues = negotiatedFeatures & FeatureNegotiation.bit(VirtioFeatureBit.multiQueue) != 0
            ? Int(config?.numQueues ?? UInt16(queueCount)) : 1
        guard options.queueCount <= min(queueCount, max(deviceQueues, 1)) else {
            throw FrontendError("\(options.queueCount) queues wanted but the backend has \(min(queueCount, deviceQueues))")
        }
        if options.dirtyLogging != .off, !negotiatedProtocol.contains(.logSHMFD) {
            throw FrontendError("dirty logging wanted: backend does not offer the LOG_SHMFD protocol feature")
        }
        let logFromStart = options.dirtyLogging == .fromDeviceStart
        try channel.send(.setFeatures(negotiatedFeatures | (logFromStart ? VhostUserFeatureBits.logAll : 0)))

        // Shared memory: all queues' rings, slots and buffers in one memfd region.
        let layout = QueueMemoryLayout(queueSize: options.effectiveQueueSize, slotCount: options.slotsPerQueue,
                                       maxRequestBytes: options.maxRequestBytes)
        let memory: SharedMemoryRegion
        if let previous = resuming?.memory {
            memory = previous
        } else {
            memory = try SharedMemoryRegion(size: layout.totalBytes * options.queueCount + QueueMemoryLayout.pageSize)
        }
        self.memory = memory
        let region = VhostUserMemoryRegionFD(region: memory.regionDescription, fd: memory.fd)
        if negotiatedProtocol.contains(.configureMemSlots) {
            try channel.send(.addMemReg(region))
        } else {
            try channel.send(.setMemTable([region]))
        }

        // The inflight buffer, before the rings (QEMU's order).
        if options.inflightTracking {
            guard negotiatedProtocol.contains(.inflightSHMFD) else {
                throw FrontendError("inflight tracking wanted but the backend does not offer INFLIGHT_SHMFD")
            }
            let (description, fd): (VhostUserInflightDescription, Int32)
            if let previous = resuming?.inflight {
                (description, fd) = (previous.description, previous.fd)
            } else {
                let wanted = VhostUserInflightDescription(mmapSize: 0, mmapOffset: 0, numQueues: UInt16(options.queueCount),
                                                          queueSize: UInt16(options.effectiveQueueSize))
                let reply = try channel.call(.getInflightFD(wanted))
                do { (description, fd) = try VhostUserReplyDecoder.inflight(reply) } catch { throw FrontendError("\(error)") }
            }
            do throws(FrontendError) {
                try channel.send(.setInflightFD(description, fd: fd))
            } catch {
                Glibc.close(fd)
                throw error
            }
            inflightFD = fd
            inflightDescription = description
        } else {
            inflightFD = nil
            inflightDescription = nil
        }

        // Queues: size, base, addresses, kick, call; then enable them all.
        let notifiers = resuming?.notifiers ?? QueueNotifiers()
        self.notifiers = notifiers
        let eventIndex = negotiatedFeatures & FeatureNegotiation.bit(VirtioFeatureBit.ringEventIndex) != 0
        var queues: [BlkQueue] = []
        if let resuming {
            for queue in resuming.queues {
                try Self.startVring(queue, base: Self.resumeBase(of: queue), channel: channel, memory: memory,
                                    kickless: options.kicklessRings, logging: logFromStart)
                queues.append(queue)
            }
        } else {
            for index in 0..<options.queueCount {
                let fds = try notifiers.makePair()
                let queue = try BlkQueue(index: index, layout: layout, memory: memory, eventIndex: eventIndex,
                                         indirect: options.indirectDescriptors, maxRequestBytes: options.maxRequestBytes,
                                         kickFD: fds.kick, callFD: fds.call, ringLayout: options.ringLayout)
                try Self.startVring(queue, base: Self.initialBase(of: queue), channel: channel, memory: memory,
                                    kickless: options.kicklessRings, logging: logFromStart)
                queues.append(queue)
            }
        }
        // Device start during a migration (QEMU's vhost_dev_start): the log after the rings.
        let startLog = logFromStart ? try FrontendDirtyLog(coveringUpTo: memory.guestPhysicalEnd) : nil
        if let startLog { try Self.sendLogBase(startLog, channel: channel) }
        if usesProtocolFeatures {
            for index in 0..<options.queueCount {
                try channel.send(.setVringEnable(VhostUserVringState(index: UInt32(index), num: 1)))
            }
        }
        self.queues = queues
        dirtyLog = startLog
        logAllSent = logFromStart
        vringLogFlagSent = logFromStart
    }

    deinit {
        if let inflightFD { Glibc.close(inflightFD) }
    }

    private static func readConfig(_ channel: FrontendChannel) throws(FrontendError) -> BlkDeviceConfig {
        let window = VhostUserConfigSpace(offset: 0, flags: VhostUserConfigSpace.flagWritable,
                                          payload: [UInt8](repeating: 0, count: BlkDeviceConfig.requestSize))
        let reply = try channel.call(.getConfig(window))
        let space: VhostUserConfigSpace?
        do { space = try VhostUserReplyDecoder.config(reply) } catch { throw FrontendError("\(error)") }
        guard let space else { throw FrontendError("GET_CONFIG: backend refused to read \(BlkDeviceConfig.requestSize) bytes of config space") }
        guard space.offset == 0, Int(space.size) == BlkDeviceConfig.requestSize, let config = BlkDeviceConfig(bytes: space.payload) else {
            throw FrontendError("GET_CONFIG: reply covers offset \(space.offset) size \(space.size), asked offset 0 size \(BlkDeviceConfig.requestSize)")
        }
        return config
    }

    /// SET_VRING_BASE for a fresh ring: 0, or for a packed ring both positions 0 with both
    /// wrap counters 1.
    static func initialBase(of queue: BlkQueue) -> UInt32 {
        queue.isPacked ? PackedVringBase.initial.encoded : 0
    }

    /// SET_VRING_BASE after a reconnect: the used index (QEMU's rewind when GET_VRING_BASE
    /// failed); for a packed ring the used position and wrap counter in both halves.
    static func resumeBase(of queue: BlkQueue) -> UInt32 {
        guard let packed = queue.packedRing else { return UInt32(queue.ring.backendUsedIndex) }
        return PackedVringBase(availablePosition: packed.usedPosition, availableWrap: packed.usedWrap,
                               usedPosition: packed.usedPosition, usedWrap: packed.usedWrap).encoded
    }

    private static func startVring(_ queue: BlkQueue, base: UInt32, channel: FrontendChannel,
                                   memory: SharedMemoryRegion, kickless: Bool, logging: Bool) throws(FrontendError) {
        let index = UInt32(queue.index)
        try channel.send(.setVringNum(VhostUserVringState(index: index, num: UInt32(queue.ringSize))))
        try channel.send(.setVringBase(VhostUserVringState(index: index, num: base)))
        try channel.send(.setVringAddr(vringAddress(of: queue, memory: memory, logging: logging)))
        try channel.send(.setVringKick(VhostUserVringFile(index: UInt8(queue.index), fd: kickless ? nil : queue.kickFD)))
        try channel.send(.setVringCall(VhostUserVringFile(index: UInt8(queue.index), fd: queue.callFD)))
    }

    /// Waits up to `milliseconds` for the backend to close the connection (or to send
    /// something, which it must not do unasked: also a broken session). Returns a line
    /// saying what happened, or nil if the connection stayed quiet. For watching a backend
    /// while the queue threads run.
    public func waitForBackendFailure(milliseconds: Int32) -> String? {
        var descriptor = pollfd(fd: channel.socket, events: Int16(POLLIN | Int32(POLLRDHUP)), revents: 0)
        let ready = poll(&descriptor, 1, max(0, milliseconds))
        guard ready > 0 else { return nil }
        if descriptor.revents & Int16(POLLIN) != 0 {
            var byte: UInt8 = 0
            if recv(channel.socket, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0 {
                return "backend sent an unexpected message on the vhost-user socket during the run"
            }
        }
        return "backend closed the vhost-user connection during the run"
    }

    /// Hangs up the connection at once, as a crashing frontend does: the backend sees the
    /// end of the stream; nothing is stopped first. The memory, rings and inflight buffer stay
    /// for a `reconnect`; the socket fd itself is released with this object.
    public func hangUp() {
        Glibc.shutdown(channel.socket, Int32(SHUT_RDWR))
    }

    /// Gives the backend an eventfd to signal when queue `queue` breaks
    /// (VHOST_USER_SET_VRING_ERR). The caller keeps `fd`; the backend gets a copy.
    public func setVringErrorFD(queue: Int, fd: Int32) throws(FrontendError) {
        try channel.send(.setVringErr(VhostUserVringFile(index: UInt8(truncatingIfNeeded: queue), fd: fd)))
    }

    /// Whether the device is read-only (VIRTIO_BLK_F_RO offered).
    public var isReadOnly: Bool { negotiatedFeatures & FeatureNegotiation.bit(VirtioFeatureBit.readOnly) != 0 }

    /// Stops every queue: SET_VRING_ENABLE 0, then GET_VRING_BASE, whose answer must equal
    /// the avail index the driver published (`finalQueues`: the queues as the threads left
    /// them, with nothing in flight). Tries every queue and reports the first problem.
    public func shutdown(finalQueues: [BlkQueue]) throws(FrontendError) {
        guard !isShutDown else { return }
        isShutDown = true
        var firstError: FrontendError?
        for queue in finalQueues {
            do throws(FrontendError) {
                let index = UInt32(queue.index)
                if usesProtocolFeatures {
                    try channel.send(.setVringEnable(VhostUserVringState(index: index, num: 0)))
                }
                let reply = try channel.call(.getVringBase(VhostUserVringState(index: index, num: 0)))
                let state: VhostUserVringState
                do { state = try VhostUserReplyDecoder.vringState(reply, to: .getVringBase) } catch { throw FrontendError("\(error)") }
                guard state.index == index else {
                    throw FrontendError("GET_VRING_BASE: asked for queue \(index), reply is for queue \(state.index)")
                }
                if let packed = queue.packedRing {
                    let expected = packed.base
                    guard state.num == expected.encoded else {
                        throw FrontendError("GET_VRING_BASE: packed queue \(index) base is \(PackedVringBase(encoded: state.num)) but the driver is at \(expected)")
                    }
                } else {
                    let expected = UInt32(queue.ring.publishedAvailableIndex)
                    guard state.num == expected else {
                        throw FrontendError("GET_VRING_BASE: queue \(index) base is \(state.num) but the driver made \(expected) available")
                    }
                }
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw firstError }
    }
}
