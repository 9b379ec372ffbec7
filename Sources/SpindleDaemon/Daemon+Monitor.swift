import BlockCommon
import BlockGraph
import ControlThread
import Exports
import Monitor
import SpindleOptions

/// The QMP commands' effects, through the GS API (see Monitor/MonitorCommandTarget.swift).
extension Daemon: MonitorCommandTarget {
    public func blockdevAdd(_ options: BlockdevOptions) throws(QMPError) {
        do {
            try graph.openNode(options)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    public func blockdevDel(nodeName: String) throws(QMPError) {
        guard graph.nodes[NodeName(nodeName)] != nil else {
            throw QMPError(.genericError, "Failed to find node with node-name='\(nodeName)'")
        }
        do {
            try graph.closeNode(NodeName(nodeName))
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    public func blockdevSetActive(nodeName: String?, active: Bool) async throws(QMPError) {
        do {
            try await graph.setActive(active, node: nodeName.map(NodeName.init))
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    public func blockExportAdd(_ options: VhostUserBlkExportOptions) async throws(QMPError) {
        do {
            try addExport(options)
        } catch {
            throw QMPError(.genericError, "\(error)")
        }
    }

    public func blockExportDel(id: String, mode: BlockExportDeleteMode) async throws(QMPError) {
        guard let export = export(id: id) else {
            throw QMPError(.genericError, "Export '\(id)' is not found")
        }
        if mode == .safe && export.hasFrontend {
            throw QMPError(.genericError, "Export '\(id)' is in use by a connected frontend; detach it first (device_del in QEMU) or use mode=hard")
        }
        await deleteExport(export)
    }

    public func blockResize(_ target: ResizeTarget, size: UInt64) async throws(QMPError) -> ResizeOutcome {
        let node: NodeName
        switch target {
        case .nodeName(let name):
            node = NodeName(name)
            guard graph.nodes[node] != nil else { throw QMPError(.genericError, "Cannot find device='' nor node-name='\(name)'") }
        case .device(let id):
            guard let export = export(id: id) else { throw QMPError(.deviceNotFound, "Device '\(id)' not found") }
            guard let root = graph.servedNode(of: export.backend) else {
                throw QMPError(.genericError, "Device '\(id)' has no medium (it was revoked)")
            }
            node = root.name
        }
        do {
            let result = try await graph.resize(node: node, to: size)
            return ResizeOutcome(guestNotified: !result.notifiedDevices.isEmpty && result.unnotifiedDevices.isEmpty)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    public func revokeExport(id: String) async throws(QMPError) {
        guard let export = export(id: id) else { throw QMPError(.deviceNotFound, "Device '\(id)' not found") }
        guard !export.isRevoked else { throw QMPError(.genericError, "Export '\(id)' was already revoked") }
        await export.revoke()
        emit(event: "BLOCK_EXPORT_REVOKED", data: JSONObject(["id": .string(id)]))
    }

    public func queryBlockExports() -> [BlockExportInfo] {
        // The node each export uses now (a mirror's pivot moves it), else the one it was given.
        exports.map { export in
            let node = graph.servedNode(of: export.backend)?.name ?? export.options.nodeName
            return BlockExportInfo(id: export.options.id, nodeName: "\(node)", shuttingDown: export.isShuttingDown,
                                   memoryBytes: export.memoryBytes)
        }
    }

    public func queryNamedBlockNodes() -> [BlockNodeInfo] {
        graph.nodes.values.sorted { $0.name.rawValue < $1.name.rawValue }.map { node in
            let shown = node.display  // what the node's driver shows
            var info = BlockNodeInfo(nodeName: node.name.rawValue, driver: node.driverName, file: shown.file, readOnly: node.readOnly,
                                     virtualSize: node.length, cacheDirect: shown.cacheDirect, cacheNoFlush: shown.cacheNoFlush,
                                     active: node.isActive)
            info.clusterSize = shown.clusterSize
            info.backingFile = shown.backingFile
            info.backingFormat = shown.backingFormat
            info.backingFileDepth = shown.backingDepth
            return info
        }
    }

    public func objectAdd(_ options: IOThreadObjectOptions) throws(QMPError) {
        guard iothreads[options.id] == nil, graph.throttleGroups[options.id] == nil else { throw QMPError(.genericError, "attempt to add duplicate property '\(options.id)' to object (type 'container')") }
        do {
            iothreads[options.id] = try startIOThread(id: options.id, cpu: options.cpu, pollMaxNs: options.pollMaxNs,
                                                      pollGrow: options.pollGrow, pollShrink: options.pollShrink, sleepsInPoll: options.sleepsInPoll)
        } catch {
            throw QMPError(.genericError, "cannot start iothread '\(options.id)': \(error)")
        }
    }

    public func objectDel(id: String) throws(QMPError) {
        if try deleteThrottleGroupObject(id: id) { return }
        if try secretDel(id: id) { return }
        guard let thread = iothreads[id] else { throw QMPError(.genericError, "object '\(id)' not found") }
        if let user = exports.first(where: { $0.options.namedIOThreads.contains(id) }) {
            throw QMPError(.genericError, "iothread '\(id)' is used by export '\(user.options.id)'; delete the export first")
        }
        let queues = placements.queueNames(servedBy: id)
        if !queues.isEmpty {
            throw QMPError(.genericError, "iothread '\(id)' still serves \(queues.joined(separator: ", "))")
        }
        thread.stop()
        iothreads[id] = nil
    }

    public func moveQueue(exportID: String, queue: Int, iothread: String) async throws(QMPError) {
        guard let export = export(id: exportID) else { throw QMPError(.genericError, "Export '\(exportID)' is not found") }
        guard let thread = iothreads[iothread] else { throw QMPError(.genericError, "iothread '\(iothread)' not found") }
        rbdQueueMoveStarting(exportID: exportID, queue: queue, to: thread)
        do {
            try await export.moveQueue(queue, to: thread)
        } catch {
            rbdQueueMoveEnded(exportID: exportID, queue: queue, moved: false)
            throw QMPError(.genericError, error.description)
        }
        rbdQueueMoveEnded(exportID: exportID, queue: queue, moved: true)
        queueMoved(export: exportID, queue: queue, to: thread)
    }

    public func queryIOThreads() -> [IOThreadInfo] {
        iothreads.values.sorted { $0.id < $1.id }.map { thread in
            IOThreadInfo(id: thread.id, threadID: thread.threadID, cpu: thread.cpu,
                         node: thread.cpu.flatMap { placer?.topology.node(ofCPU: $0) },
                         queues: placements.queueNames(servedBy: thread.id),
                         pollMaxNs: thread.pollMaxNs, pollGrow: thread.pollGrow, pollShrink: thread.pollShrink,
                         pollCurrentNs: thread.pollCurrentNs, pollHits: thread.pollHits, pollMisses: thread.pollMisses,
                         sleeps: thread.sleeps, pollYields: thread.pollYields,
                         sleepNs: thread.sleepNanoseconds, pollNs: thread.pollNanoseconds, busyNs: thread.busyNanoseconds)
        }
    }

    public func quit() {
        requestQuit()
    }
}
