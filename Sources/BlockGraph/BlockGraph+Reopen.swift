import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging

/// Changing a node between read-only and read-write while it runs (blockdev-reopen; a
/// commit's read-only base made writable for the job; the old active layer after a
/// snapshot made read-only), as QEMU's bdrv_reopen_set_read_only. GS, on the control
/// thread, while every BlockBackend reading through the node is drained.
///
/// driver=file: the image is opened again in the new mode and the new descriptor takes the
/// old one's number (FileDriver+Reopen); its locks move with it. qcow2: its file (a node, or
/// its own inline file) follows it; going read-write runs a read-write open's checks and
/// gives the data path an allocator, going read-only flushes and gives back the clusters
/// reserved for allocation. If a step fails the node stays as it was.
extension BlockGraph {
    /// Reopens `node` read-only or read-write. The BlockBackends reading through it must be
    /// drained (`reopenDrained` does that).
    public func reopen(_ node: BlockNode, readOnly: Bool) throws(BlockError) {
        ControlActor.preconditionOnControlThread("reopen")
        for backend in nodesReading(through: node).flatMap({ users(of: $0.name) }) {
            precondition(backend.isDrained, "reopen of node '\(node.name)' while BlockBackend '\(backend.name)' is not drained")
        }
        guard node.readOnly != readOnly else { return }
        guard node.isActive else {
            throw BlockError(errno: EPERM, "Node '\(node.name)' is inactive; activate it first (blockdev-set-active)")
        }
        if readOnly, node.userNeeds.contains(where: { $0.contains(.write) }) || hasWritableImageAbove(node) {
            throw BlockError(errno: EBUSY, "Read-only block node '\(node.name)' cannot support read-write users")
        }
        switch node.driver {
        case let file as FileDriver:
            try file.reopen(readOnly: readOnly)
            node.options.driver = .file(file.options)
        case let qcow2 as Qcow2Driver:
            if readOnly { try reopenReadOnly(node, qcow2) } else { try reopenWritable(node, qcow2) }
        default:
            throw BlockError(errno: ENOTSUP, "Block format '\(node.driverName)' used by node '\(node.name)' does not support reopening files")
        }
        Logger(label: "spindle.block").notice("reopened node", metadata: ["node": "\(node.name)", "read-only": "\(node.readOnly)"])
    }

    /// Drains every BlockBackend reading through `node`, reopens it, resumes them.
    public func reopenDrained(_ node: BlockNode, readOnly: Bool) async throws(BlockError) {
        let readers = nodesReading(through: node).flatMap { users(of: $0.name) }
        try await withDrained(readers) { () throws(BlockError) in try reopen(node, readOnly: readOnly) }
    }

    /// File first (the image needs it writable), then the image's write path, then the
    /// locks its users need now (write on the file). Undone in reverse on failure.
    private func reopenWritable(_ node: BlockNode, _ qcow2: Qcow2Driver) throws(BlockError) {
        guard let file = qcow2.fileDriver else {
            throw BlockError(errno: ENOTSUP, "qcow2 node '\(node.name)': its file cannot be reopened")
        }
        let fileNode = fileNode(of: qcow2)
        if let fileNode, let blocker = fileNode.blocker { throw BlockError(errno: EBUSY, "Node '\(fileNode.name)' is busy: \(blocker)") }
        let fileWasReadOnly = !file.file.writable
        if fileWasReadOnly {
            let prepared = try file.prepareReopen(readOnly: false)
            guard !prepared.readOnly else {
                throw BlockError(errno: EROFS, "qcow2 node '\(node.name)': its file '\(file.options.filename)' cannot be opened for writing")
            }
            try file.commitReopen(prepared)
        }
        do throws(BlockError) {
            let allocator = try qcow2.prepareWritable()
            qcow2.image.replaceAllocator(allocator)
            do throws(BlockError) {
                try node.updateLocks()
            } catch {
                _ = allocator.close()
                qcow2.image.replaceAllocator(nil)
                try? node.updateLocks()
                throw error
            }
        } catch {
            if fileWasReadOnly { try? file.reopen(readOnly: true) }
            throw error
        }
        setReadOnlyOption(node, qcow2, fileNode: fileNode, readOnly: false)
    }

    /// What may fail first (the file's new descriptor, the flush), then the write path goes,
    /// the locks drop to reading, and the file follows.
    private func reopenReadOnly(_ node: BlockNode, _ qcow2: Qcow2Driver) throws(BlockError) {
        let fileNode = fileNode(of: qcow2)
        var prepared: PreparedFileReopen?
        if let file = qcow2.fileDriver, file.file.writable {
            // Another user writing the file node keeps it writable (then only the image is
            // made read-only), as a parent that needs write would in QEMU.
            let othersWrite = fileNode.map { $0.userNeeds.filter { $0.contains(.write) }.count > 1 } ?? false
            if !othersWrite { prepared = try file.prepareReopen(readOnly: true) }
        }
        try qcow2.dropWritePath()
        try? node.updateLocks()
        if let file = qcow2.fileDriver, let next = prepared.take() {
            do throws(BlockError) {
                try file.commitReopen(next)
            } catch {
                Logger(label: "spindle.block").warning("qcow2 node '\(node.name)' is read-only now, but its file '\(file.options.filename)' stays open read-write: \(error.message)")
            }
        }
        setReadOnlyOption(node, qcow2, fileNode: fileNode, readOnly: true)
    }

    /// Whether a read-write qcow2 node is built on this (file) node: it writes its file even
    /// before it has users of its own (it needs the file writable to be writable).
    private func hasWritableImageAbove(_ node: BlockNode) -> Bool {
        node.parents.contains { name in
            guard let parent = nodes[name], let image = parent.driver as? Qcow2Driver, parent.io.writable else { return false }
            return fileNode(of: image) === node
        }
    }

    private func fileNode(of qcow2: Qcow2Driver) -> BlockNode? {
        if case .node(let node) = qcow2.file { return node }
        return nil
    }

    /// The options say what the node is now (query-named-block-nodes, the state file).
    private func setReadOnlyOption(_ node: BlockNode, _ qcow2: Qcow2Driver, fileNode: BlockNode?, readOnly: Bool) {
        guard case .qcow2(var options) = node.options.driver else { return }
        options.readOnly = readOnly
        if case .inline(var inline) = options.file, let file = qcow2.fileDriver {
            inline.readOnly = file.options.readOnly
            options.file = .inline(inline)
        }
        node.options.driver = .qcow2(options)
        if let fileNode, let file = qcow2.fileDriver { fileNode.options.driver = .file(file.options) }
    }
}
