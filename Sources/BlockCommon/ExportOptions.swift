/// Options of a vhost-user-blk export as given by `--export` (or, later, QMP `block-export-add`).
public struct VhostUserBlkExportOptions: Sendable, Equatable {
    public var id: String
    public var nodeName: NodeName
    public var socketPath: String
    public var writable: Bool = false
    /// `writethrough=on`: report the write cache as off and make every write durable before completing.
    public var writethrough: Bool = false
    /// Virtqueues offered (GET_QUEUE_NUM). 16 by default, not qsd's 1: QEMU's
    /// vhost-user-blk-pci asks for one queue per vCPU and fails to realize if the backend
    /// offers fewer; it uses only the queues it asks for.
    public var numQueues: Int = 16
    public var logicalBlockSize: UInt32 = 512
    public var serial: String? = nil
    /// IOThread object id (`iothread=`) serving every queue; nil (and no mapping) means
    /// automatic placement.
    public var iothread: String? = nil
    /// `iothread=[a,b]` (round-robin) or QEMU's `iothread-vq-mapping`; empty if not given.
    public var iothreadMapping: [IOThreadVQMapping] = []
    /// `x-inflight=off` (TEST ONLY): withhold VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, to show
    /// what a crash does to a frontend that rewinds the ring instead.
    public var inflightTracking: Bool = true
    /// `allow-inactive=on` (QEMU 10): the export may use an inactive node and does not
    /// activate it; guest requests wait in the rings while the node is inactive. Off: adding
    /// the export activates the node, and the node cannot be inactivated while it exists.
    public var allowInactive: Bool = false
    /// `x-dirty-log=unmarked` (TEST ONLY; default `marked`): offer dirty logging and accept
    /// every message, but mark nothing, to prove a migration test can fail.
    public var dirtyLogMarked: Bool = true
    /// `packed-ring` (default on): offer VIRTIO_F_RING_PACKED (packed virtqueues, with the
    /// packed inflight region); `off` withholds it, so every guest uses split rings.
    public var packedRing: Bool = true

    /// Every iothread id the export names.
    public var namedIOThreads: [String] { (iothread.map { [$0] } ?? []) + iothreadMapping.map(\.iothread) }
    public init(id: String, nodeName: NodeName, socketPath: String) {
        self.id = id
        self.nodeName = nodeName
        self.socketPath = socketPath
    }
}

/// One entry of an export's queue-to-IOThread mapping (QEMU's IOThreadVirtQueueMapping):
/// the queues `vqs` run on `iothread`; with no `vqs` in any entry, queues go round-robin.
public struct IOThreadVQMapping: Sendable, Equatable {
    public var iothread: String
    public var vqs: [Int]?
    public init(iothread: String, vqs: [Int]? = nil) {
        self.iothread = iothread
        self.vqs = vqs
    }
}

extension VhostUserBlkExportOptions {
    /// The iothread a queue is mapped to by `iothread` or `iothreadMapping`, or nil for
    /// automatic placement.
    public func mappedIOThread(forQueue queue: Int) -> String? {
        if let iothread { return iothread }
        guard !iothreadMapping.isEmpty else { return nil }
        if iothreadMapping.allSatisfy({ $0.vqs == nil }) {
            return iothreadMapping[queue % iothreadMapping.count].iothread
        }
        return iothreadMapping.first { $0.vqs?.contains(queue) == true }?.iothread
    }
}
