import BlockCommon
import ControlThread
import SpindleOptions

/// What the QMP commands act on: the daemon's global state. Implemented by the daemon (the
/// `spindle` target); every method runs on the control thread and goes through the GS API.
/// Errors are QMPError so the monitor can reply with QEMU's error class and text.
@ControlActor
public protocol MonitorCommandTarget: AnyObject {
    /// blockdev-add: open a node.
    func blockdevAdd(_ options: BlockdevOptions) throws(QMPError)
    /// blockdev-del: close a node no export uses.
    func blockdevDel(nodeName: String) throws(QMPError)
    /// blockdev-set-active: activate or inactivate one node (nil: every node).
    func blockdevSetActive(nodeName: String?, active: Bool) async throws(QMPError)
    /// block-export-add (type vhost-user-blk).
    func blockExportAdd(_ options: VhostUserBlkExportOptions) async throws(QMPError)
    /// block-export-del; the target emits BLOCK_EXPORT_DELETED when the export is gone.
    func blockExportDel(id: String, mode: BlockExportDeleteMode) async throws(QMPError)
    /// block_resize by node name or by device (export id).
    func blockResize(_ target: ResizeTarget, size: UInt64) async throws(QMPError) -> ResizeOutcome
    /// drive_del / block-export-revoke: withdraw the export's access to its image; emits
    /// BLOCK_EXPORT_REVOKED when done.
    func revokeExport(id: String) async throws(QMPError)
    /// object-add qom-type=iothread: start an IOThread.
    func objectAdd(_ options: IOThreadObjectOptions) throws(QMPError)
    /// object-add qom-type=secret: keep a key for rbd nodes (never shown or logged).
    func secretAdd(_ options: SecretObjectOptions) throws(QMPError)
    /// object-del: stop an IOThread nothing uses.
    func objectDel(id: String) throws(QMPError)
    /// x-queue-move (Spindle's): serve an export's virtqueue from another IOThread.
    func moveQueue(exportID: String, queue: Int, iothread: String) async throws(QMPError)
    /// blockdev-mirror: start a mirror job (events JOB_STATUS_CHANGE, BLOCK_JOB_READY, ...).
    func blockdevMirror(_ request: MirrorRequest) async throws(QMPError)
    /// job-pause, job-resume, job-cancel, job-complete, job-finalize, job-dismiss.
    func jobCommand(_ command: JobCommand, id: String) throws(QMPError)
    func queryJobs() -> [JobQueryInfo]
    func queryBlockExports() -> [BlockExportInfo]
    func queryNamedBlockNodes() -> [BlockNodeInfo]
    func queryIOThreads() -> [IOThreadInfo]
    /// query-blockstats (and metrics): every export's and every named node's request
    /// statistics now, per queue (see BlockCommon/BlockStatsSnapshot.swift).
    func queryBlockStats() -> BlockStatsReport
    /// quit: shut the daemon down (after the reply is sent).
    func quit()
    /// A command succeeded and its reply is about to be sent: record it (the state file).
    /// Has a default that records nothing (QMPStateRecording.swift).
    func recordSucceeded(command: String, arguments: JSONObject, result: JSONValue) throws(QMPError)
    /// blockdev-create: start a job of type "create" that makes a file or qcow2 image.
    /// Defaults (SnapshotCommands.swift) refuse it and the two below.
    func blockdevCreate(jobID: String, options: BlockdevCreateOptions) throws(QMPError)
    /// blockdev-snapshot: `overlay` (a qcow2 node without backing) becomes the active layer over `node`.
    func blockdevSnapshot(node: String, overlay: String) async throws(QMPError)
    /// blockdev-snapshot-sync: create (or open) the overlay, then as blockdev-snapshot.
    func blockdevSnapshotSync(_ request: SnapshotSyncRequest) async throws(QMPError)
    /// block-commit: start a commit job (CommitCommands.swift; the default refuses it).
    func blockCommit(_ request: CommitRequest) async throws(QMPError)
    /// block-stream: pull a qcow2 node's backing layers (above a base) into it, then drop them.
    /// Default (StreamCommands.swift) refuses.
    func blockStream(_ request: StreamRequest) async throws(QMPError)
    /// block-job-set-speed: `device` is the job id; `speed` bytes/s (0: none, negative refused).
    /// Default (BlockJobSpeedCommands.swift): no such job.
    func blockJobSetSpeed(device: String, speed: Int64) throws(QMPError)
    /// query-block-jobs: the block jobs (not blockdev-create's). Default: none.
    func queryBlockJobs() -> [BlockJobQueryInfo]
    /// blockdev-reopen: change nodes' read-only mode (`arguments`: each node's options as
    /// given, for the state file). Default (BlockdevReopenCommands.swift) refuses.
    func blockdevReopen(_ options: [BlockdevOptions], arguments: [JSONObject]) async throws(QMPError)
}

extension MonitorCommandTarget {
    /// object-add qom-type=secret (targets without secrets refuse it).
    public func secretAdd(_ options: SecretObjectOptions) throws(QMPError) {
        throw QMPError("object type 'secret' is not supported here")
    }
}

public enum BlockExportDeleteMode: String, Sendable {
    /// Refused while a frontend is connected.
    case safe
    /// Disconnect the frontend, then delete.
    case hard
}

public enum ResizeTarget: Sendable, Equatable {
    case nodeName(String)
    case device(String)
}

public struct ResizeOutcome: Sendable, Equatable {
    /// Whether a frontend was told through the backend channel (CONFIG_CHANGE_MSG).
    public var guestNotified: Bool
    public init(guestNotified: Bool) { self.guestNotified = guestNotified }
}

public struct BlockExportInfo: Sendable, Equatable {
    public var id: String
    public var type: String
    public var nodeName: String
    public var shuttingDown: Bool
    /// Spindle's own: bytes of request bookkeeping the export's connected queues hold
    /// ("x-memory-bytes"; 0 with no frontend).
    public var memoryBytes: Int
    public init(id: String, type: String = "vhost-user-blk", nodeName: String, shuttingDown: Bool = false,
                memoryBytes: Int = 0) {
        self.id = id
        self.type = type
        self.nodeName = nodeName
        self.shuttingDown = shuttingDown
        self.memoryBytes = memoryBytes
    }
}

public struct BlockNodeInfo: Sendable, Equatable {
    public var nodeName: String
    public var driver: String
    /// The image file name (the node name for drivers without one, as QEMU shows).
    public var file: String
    public var readOnly: Bool
    public var virtualSize: UInt64
    public var cacheDirect: Bool
    public var cacheNoFlush: Bool
    /// False while the node is inactive (blockdev-set-active).
    public var active: Bool
    /// Image formats (qcow2): cluster size, backing file and its format, chain depth.
    public var clusterSize: UInt64?
    public var backingFile: String?
    public var backingFormat: String?
    public var backingFileDepth = 0
    public init(nodeName: String, driver: String, file: String, readOnly: Bool, virtualSize: UInt64,
                cacheDirect: Bool = false, cacheNoFlush: Bool = false, active: Bool = true) {
        self.nodeName = nodeName
        self.driver = driver
        self.file = file
        self.readOnly = readOnly
        self.virtualSize = virtualSize
        self.cacheDirect = cacheDirect
        self.cacheNoFlush = cacheNoFlush
        self.active = active
    }
}

public struct IOThreadInfo: Sendable, Equatable {
    public var id: String
    public var threadID: Int32
    public var cpu: Int?
    /// NUMA node of `cpu`, when pinned.
    public var node: Int?
    /// The virtqueues it serves, as "export/queue".
    public var queues: [String]
    public var pollMaxNs: UInt64
    public var pollGrow: UInt64
    public var pollShrink: UInt64
    /// The adaptive window now, and how often polling found work or gave way to sleep.
    public var pollCurrentNs: UInt64
    public var pollHits: UInt64
    public var pollMisses: UInt64
    public var sleeps: UInt64
    /// Polling turns that yielded the CPU to the kernel's I/O workers.
    public var pollYields: UInt64
    /// Nanoseconds since the thread started spent asleep, busy-polling, and working.
    public var sleepNs: UInt64
    public var pollNs: UInt64
    public var busyNs: UInt64
    public init(id: String, threadID: Int32, cpu: Int?, node: Int? = nil, queues: [String] = [],
                pollMaxNs: UInt64 = 0, pollGrow: UInt64 = 0, pollShrink: UInt64 = 0,
                pollCurrentNs: UInt64 = 0, pollHits: UInt64 = 0, pollMisses: UInt64 = 0, sleeps: UInt64 = 0, pollYields: UInt64 = 0,
                sleepNs: UInt64 = 0, pollNs: UInt64 = 0, busyNs: UInt64 = 0) {
        self.id = id
        self.threadID = threadID
        self.cpu = cpu
        self.node = node
        self.queues = queues
        self.pollMaxNs = pollMaxNs
        self.pollGrow = pollGrow
        self.pollShrink = pollShrink
        self.pollCurrentNs = pollCurrentNs
        self.pollHits = pollHits
        self.pollMisses = pollMisses
        self.sleeps = sleeps
        self.pollYields = pollYields
        self.sleepNs = sleepNs
        self.pollNs = pollNs
        self.busyNs = busyNs
    }
}

/// A QMP error reply: QEMU's error class and a description for the operator.
public struct QMPError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum ErrorClass: String, Sendable {
        case genericError = "GenericError"
        case commandNotFound = "CommandNotFound"
        case deviceNotFound = "DeviceNotFound"
        case deviceNotActive = "DeviceNotActive"
        case kvmMissingCap = "KVMMissingCap"
    }
    public var errorClass: ErrorClass
    public var desc: String
    public init(_ errorClass: ErrorClass = .genericError, _ desc: String) {
        self.errorClass = errorClass
        self.desc = desc
    }
    public var description: String { desc }
}
