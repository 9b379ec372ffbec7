import ControlThread

/// The device behind a vhost-user backend session (QEMU's VuDevIface, rust-vmm's
/// VhostUserBackend): what the session cannot know by itself. Everything else (features,
/// memory table, vring state, inflight buffer, backend channel) is the session's. A new
/// device type is one conforming type plus its queue (`VhostUserDeviceQueue`).
/// Control thread only; the queues it makes run on IOThreads.
@ControlActor
public protocol VhostUserDevice: AnyObject {
    /// The virtio feature bits offered to the driver (without vhost-user's PROTOCOL_FEATURES
    /// bit, which the session adds).
    var deviceFeatures: UInt64 { get }
    /// Protocol features this device must not offer (e.g. INFLIGHT_SHMFD when crash recovery
    /// is switched off). Default: none; the session offers everything it implements.
    var withheldProtocolFeatures: VhostUserProtocolFeatures { get }
    /// Whether the queues mark the pages they write in the frontend's dirty log. Default
    /// true; false only for the test hook that proves a migration test can fail (the log
    /// features are still offered and every message accepted, but nothing is marked).
    var marksDirtyPages: Bool { get }
    /// Number of virtqueues (GET_QUEUE_NUM).
    var queueCount: Int { get }
    /// Names the device in operator messages ("vhost-user-blk").
    var typeName: String { get }

    /// GET_CONFIG: `size` bytes of config space at `offset`, or nil when out of range.
    func readConfig(offset: Int, size: Int) -> [UInt8]?
    /// SET_CONFIG: false if the write is refused. `negotiatedFeatures` are the driver's
    /// (some fields are writable only with a feature).
    func writeConfig(offset: Int, bytes: [UInt8], negotiatedFeatures: UInt64) -> Bool

    /// A queue for ring `index`, which is about to start: built here on the control thread,
    /// then started on its IOThread. The queue owns neither fd (the session closes them after
    /// the queue stopped). `kickFD` is -1 when the frontend set the ring up without one
    /// (NOFD): the queue then polls the ring. Throws if the device cannot serve the ring.
    func makeQueue(index: Int, ring: SplitVirtqueue, kickFD: Int32, callFD: Int32,
                   inflight: InflightTracker?) throws -> any VhostUserDeviceQueue

    /// A request the session does not implement itself (decoded as `.unsupported`): the
    /// device's own messages, with their unchecked payload (any fds were already closed).
    /// nil = not the device's either (the session closes the connection).
    func handleDeviceRequest(_ code: VhostUserRequestCode, payload: [UInt8]) async -> VhostUserRequestOutcome?
}

extension VhostUserDevice {
    public var withheldProtocolFeatures: VhostUserProtocolFeatures { [] }
    public var marksDirtyPages: Bool { true }
    public func handleDeviceRequest(_ code: VhostUserRequestCode, payload: [UInt8]) async -> VhostUserRequestOutcome? { nil }
}

/// How one request was handled, and so what the session does next.
public enum VhostUserRequestOutcome {
    /// Handled; acknowledged if the frontend asked (REPLY_ACK).
    case done
    /// Handled, with this reply (sent as is; any fds in it are closed after sending).
    case reply(VhostUserMessage)
    /// Refused: logged, NACKed if the frontend asked; the session goes on.
    case failed(String)
    /// The frontend broke the protocol: logged, the connection is closed.
    case fatal(String)
}
