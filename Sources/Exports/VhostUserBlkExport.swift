import BlockCommon
import BlockGraph
import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import Logging
import VhostUser
import VirtioBlk

/// A vhost-user-blk export: a listening socket, a virtio-blk device behind it and the
/// BlockBackend (named after the export id) it uses. Each accepted frontend gets a
/// `VhostUserBackendSession` (the protocol) talking to the virtio-blk device. One frontend
/// at a time: a second one is refused with a log line while the first is connected; one that
/// arrives after the first has hung up is held until the first's teardown has finished. Lives on the control thread.
@ControlActor
public final class VhostUserBlkExport: BlockDeviceOps {
    public let options: VhostUserBlkExportOptions
    public let backend: BlockBackend
    let device: VirtioBlkDevice
    /// The device as the vhost-user session sees it.
    private let sessionDevice: VirtioBlkVhostUserDevice
    let threads: any IOThreadProvider
    let logger: Logger
    private let graph: BlockGraph
    private let listener: UnixListener
    private var listenWatch: FileDescriptorWatch?
    private(set) var session: VhostUserBackendSession?
    /// A connection that arrived while the previous frontend, already gone, was still being
    /// torn down; served once that teardown has finished. At most one.
    private var heldConnection: Int32?
    /// Set once drive_del / block-export-revoke withdrew the image: the export stays, every
    /// guest request fails with IOERR.
    public private(set) var isRevoked = false
    public private(set) var isShuttingDown = false
    public var hasFrontend: Bool { session != nil }
    /// Called when a frontend has connected or its connection is gone (the daemon's
    /// systemd STATUS= line counts frontends).
    public var onFrontendChange: (@ControlActor () -> Void)?
    /// Bytes of request bookkeeping the frontend's running queues hold (0 with none): see
    /// `VirtioBlkDevice.queueMemoryBytes`.
    public var memoryBytes: Int { device.queueMemoryBytes }

    /// `waitsForActivation`: the node may stay inactive until the daemon activates it (a
    /// start-up waiting for an rbd lock) although `options` do not allow it; `options` stay
    /// as given, so what the state file records and queries show stays true.
    public init(options: VhostUserBlkExportOptions, graph: BlockGraph, threads: any IOThreadProvider,
                waitsForActivation: Bool = false) throws {
        ControlActor.preconditionOnControlThread("VhostUserBlkExport.init")
        let allowInactive = options.allowInactive || waitsForActivation
        var logger = Logger(label: "spindle.export")
        logger[metadataKey: "export"] = "\(options.id)"
        self.logger = logger
        self.options = options
        self.graph = graph
        self.threads = threads
        var permissions: BlockPermissions = [.consistentRead]
        if options.writable { permissions.insert(.write) }
        do {
            // As QEMU: without allow-inactive the export activates its node first.
            if !allowInactive, graph.nodes[options.nodeName] != nil { try graph.activate(node: options.nodeName) }
            backend = try graph.createBackend(name: options.id, node: options.nodeName, permissions: permissions,
                                              allowInactive: allowInactive)
        } catch {
            throw ExportError("--export id=\(options.id): \(error.message)")
        }
        device = VirtioBlkDevice(exportID: options.id, backend: backend, readOnly: !options.writable,
                                 logicalBlockSize: options.logicalBlockSize, numQueues: UInt16(options.numQueues),
                                 serial: options.serial, writeCache: !options.writethrough)
        // x-inflight=off (TEST ONLY) withholds INFLIGHT_SHMFD, to show what a crash does to a
        // frontend that rewinds the ring.
        // x-dirty-log=unmarked (TEST ONLY) offers dirty logging but never marks a page.
        // packed-ring=on offers VIRTIO_F_RING_PACKED.
        sessionDevice = VirtioBlkVhostUserDevice(device: device,
                                                 withheldProtocolFeatures: options.inflightTracking ? [] : [.inflightSHMFD],
                                                 marksDirtyPages: options.dirtyLogMarked,
                                                 offersPackedRing: options.packedRing)
        do {
            listener = try UnixListener(path: options.socketPath, pathOption: "addr.path")
        } catch {
            let backend = self.backend
            Task { await graph.deleteBackend(backend) }
            throw ExportError("--export id=\(options.id): \(error.description)")
        }
        graph.setDeviceOps(self, for: backend)
        listenWatch = try ControlExecutor.shared.watch(fd: listener.fd, events: EPOLLIN.rawValue) { [weak self] _ in
            self?.acceptConnections()
        }
        logger.info("export ready", metadata: ["socket": "\(options.socketPath)", "node": "\(options.nodeName)",
                                               "writable": "\(options.writable)", "queues": "\(options.numQueues)"])
    }

    private func acceptConnections() {
        while let fd = listener.accept() {
            guard let current = session else {
                startSession(socket: fd)
                continue
            }
            guard current.peerHasHungUp else {
                logger.warning("refusing a second frontend connection: export \(options.id) already has one (vhost-user allows one frontend per export); disconnect the first frontend before attaching another")
                Glibc.close(fd)
                continue
            }
            guard heldConnection == nil else {
                logger.warning("refusing a frontend connection: export \(options.id) is still closing its previous frontend and already holds one new connection for after it; reconnect once that one is served")
                Glibc.close(fd)
                continue
            }
            // The previous frontend has gone: serve this one once its teardown has finished.
            heldConnection = fd
            logger.info("frontend connection held until the previous frontend's teardown has finished")
            current.readUpToHangUp()
        }
    }

    private func startSession(socket fd: Int32) {
        do {
            session = try VhostUserBackendSession(socket: fd, exportID: options.id, device: sessionDevice,
                                                  threads: threads, logger: logger) { [weak self] closed in
                self?.sessionClosed(closed)
            }
            logger.info("frontend connected")
            onFrontendChange?()
        } catch {
            logger.error("cannot set up the frontend connection: \(error)")
            Glibc.close(fd)
        }
    }

    /// Called by the session once it has closed and released everything (rings stopped,
    /// in-flight requests completed, memory unmapped): only now may a held connection start.
    private func sessionClosed(_ closed: VhostUserBackendSession) {
        guard session === closed else { return }
        session = nil
        // The queues freed their slots on their IOThreads; glibc keeps freed memory in each
        // thread's arena unless asked, so a daemon that served many frontends would keep
        // their high-water mark (bench/results/2026-12-06-density.md).
        _ = spindle_malloc_trim()
        onFrontendChange?()
        guard let fd = heldConnection else { return }
        heldConnection = nil
        if isShuttingDown { Glibc.close(fd) } else { startSession(socket: fd) }
    }

    /// Moves virtqueue `queue` to `thread` (GS: control thread only). The queue is drained
    /// first: it stops taking requests and its in-flight requests complete on the old thread.
    public func moveQueue(_ queue: Int, to thread: IOThread) async throws(ExportError) {
        ControlActor.preconditionOnControlThread("VhostUserBlkExport.moveQueue")
        guard let session else { throw ExportError("export '\(options.id)' has no frontend, so queue \(queue) is not running") }
        guard await session.moveQueue(queue, to: thread) else {
            throw ExportError("queue \(queue) of export '\(options.id)' is not running")
        }
        logger.info("queue moved", metadata: ["queue": "\(queue)", "iothread": "\(thread.id)"])
    }

    /// Withdraws the export's access to its image (drive_del): in-flight requests complete,
    /// the BlockBackend is detached, the node is closed (image unlocked, name free) if nothing
    /// else uses it; the frontend stays connected and every later request fails with IOERR.
    public func revoke() async {
        ControlActor.preconditionOnControlThread("VhostUserBlkExport.revoke")
        guard !isRevoked else { return }
        isRevoked = true
        let closed = await graph.revoke(backend)
        logger.notice("export revoked: the guest keeps the device but every request now fails with an I/O error",
                      metadata: ["closed-node": "\(closed.map { "\($0)" } ?? "-")"])
    }

    /// Disconnects the frontend (after its in-flight requests complete), removes the socket
    /// and deletes the BlockBackend.
    public func delete() async {
        ControlActor.preconditionOnControlThread("VhostUserBlkExport.delete")
        isShuttingDown = true
        if let listenWatch { ControlExecutor.shared.unwatch(listenWatch) }
        listenWatch = nil
        listener.close()
        if let held = heldConnection { Glibc.close(held) }
        heldConnection = nil
        if let session { await session.close(reason: "export \(options.id) is being deleted") }
        graph.setDeviceOps(nil, for: backend)
        await graph.deleteBackend(backend)
        logger.info("export deleted")
    }

    // MARK: BlockDeviceOps

    public func drainedEnd() {
        session?.resumeQueuesAfterDrain()
    }

    public func resized() -> Bool {
        let notified = session?.notifyConfigChange() ?? false
        logger.info("capacity changed to \(backend.length) bytes; guest \(notified ? "notified" : "not notified (no backend channel)")")
        return notified
    }
}
