import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging
import Qcow2Format

/// The end of a block-stream (GS: control thread): with the top node's users drained, its
/// header is made to name the base (or nothing) and the node is opened again over the base,
/// so that the streamed layers are no longer used; graph nodes among them stay in the graph
/// (as QEMU keeps blockdev-add'ed nodes) but, unused, hold no image locks.
extension BlockGraph {
    /// Rewrites the header and opens the top again over its new backing. Returns nothing
    /// or throws; on failure after the header was rewritten the node is opened again with
    /// its old options (which then follow the new header: the data is the same either way).
    public func finishStream(_ plan: StreamPlan) async throws(BlockError) {
        ControlActor.preconditionOnControlThread("finishStream")
        guard let top = nodes[plan.top], top.io === plan.topIO, case .qcow2(var qcow2) = top.options.driver else {
            throw BlockError(errno: ENOENT, "node '\(plan.top)' was closed or replaced during the stream")
        }
        let users = self.users(of: plan.top)
        try await withDrained(users) { () throws(BlockError) in
            try rewriteBackingReference(of: top, plan: plan)
            // A base the top opened from its header keeps its node (BlockGraph+BackingChild.swift).
            if try keepImplicitBase(of: top, plan: plan) { return }
            if let base = plan.base {
                qcow2.backing = base.node.map { .node($0) } ?? .fromHeader
            } else {
                qcow2.backing = .none
            }
            var options = top.options
            options.driver = .qcow2(qcow2)
            try reopen(top, with: options, users: users)
        }
        Logger(label: "spindle.block").notice("stream finished: the streamed layers are no longer used", metadata: [
            "node": "\(plan.top)", "backing": "\(plan.base?.filename ?? "none")",
            "released": "\(plan.copied.map { $0.node.map(\.rawValue) ?? $0.filename }.joined(separator: ","))"])
    }

    /// The header as on disk now, written back naming the new backing (unknown extensions
    /// kept), then made durable.
    private func rewriteBackingReference(of top: BlockNode, plan: StreamPlan) throws(BlockError) {
        let fd = plan.topIO.fd
        let subject = "qcow2 node '\(top.name)' ('\(top.display.file)')"
        let clusterSize = Int(plan.topIO.layout.clusterSize)
        var bytes = [UInt8](repeating: 0, count: clusterSize)
        let got = bytes.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress!, clusterSize, 0) }
        guard got >= Qcow2Header.version2Length else {
            throw BlockError(errno: EIO, "\(subject): cannot read its header to drop the streamed layers: \(String(cString: strerror(errno)))")
        }
        let newBytes: [UInt8]
        do throws(Qcow2FormatError) {
            newBytes = try Qcow2BackingRewrite.rewrite(Array(bytes[..<got]), backingFile: plan.backingFileName,
                                                       backingFormat: plan.backingFileName == nil ? nil : plan.base?.format)
        } catch {
            throw BlockError(errno: EINVAL, "\(subject): cannot rewrite its header: \(error.message)")
        }
        var rc = newBytes.withUnsafeBytes { Qcow2SyncIO.write(fd, $0.baseAddress!, $0.count, at: 0) }
        if rc == 0 { rc = Qcow2SyncIO.datasync(fd) }
        if rc < 0 {
            throw BlockError(errno: -rc, "\(subject): writing its header failed: \(String(cString: strerror(-rc))); check the image with qemu-img check and qemu-img info")
        }
    }

    /// Closes a drained node and opens it again with `options`, giving its BlockBackends the
    /// new data path with the permissions they had. If the new options fail, the old ones
    /// are used again.
    private func reopen(_ node: BlockNode, with options: BlockdevOptions, users: [BlockBackend]) throws(BlockError) {
        let name = node.name
        let old = node.options
        let blocker = node.blocker
        for backend in users { node.removeUser(backend) }
        node.blocker = nil
        do throws(BlockError) {
            try closeNode(name)
        } catch {
            node.blocker = blocker
            for backend in users { try? node.setUser(backend, permissions: backend.permissions) }
            throw error
        }
        var failure: BlockError?
        var reopened: BlockNode
        do throws(BlockError) {
            reopened = try openNode(options)
            try attach(users, to: reopened)
        } catch {
            failure = error
            if let half = nodes[name] {
                for backend in users { half.removeUser(backend) }
                try? closeNode(name)
            }
            do throws(BlockError) {
                reopened = try openNode(old)
                try attach(users, to: reopened)
            } catch {
                Logger(label: "spindle.block").critical("node '\(name)' could not be opened again after the stream (\(error.message)); its exports fail every request: add the node again with blockdev-add and re-create the exports")
                for backend in users { backend.setRoot(nil, permissions: []) }
                throw error
            }
        }
        reopened.blocker = blocker
        if let failure { throw failure }
    }

    private func attach(_ users: [BlockBackend], to node: BlockNode) throws(BlockError) {
        for backend in users {
            try node.setUser(backend, permissions: backend.permissions)
            backend.setRoot(node.io, permissions: backend.permissions)
        }
    }
}
