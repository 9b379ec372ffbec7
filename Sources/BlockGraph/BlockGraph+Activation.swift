import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging

/// Inactive nodes (QEMU 10's blockdev-set-active), for handing an image from one process to
/// another during a migration. An inactive node holds no permissions or image locks; the
/// BlockBackends on it stay quiesced, so their requests wait in the rings; activation takes
/// the locks again, re-reads the size and lets the requests go. GS: control thread only.
extension BlockGraph {
    /// blockdev-set-active: one node (with its children as QEMU does), or all when `name`
    /// is nil. Doing what is already done is not an error.
    public func setActive(_ active: Bool, node name: NodeName?) async throws(BlockError) {
        ControlActor.preconditionOnControlThread("setActive")
        var named: BlockNode?
        if let name {
            guard let node = nodes[name] else { throw BlockError(errno: ENOENT, "Failed to find node with node-name='\(name)'") }
            named = node
        }
        if active {
            for node in named.map({ [$0] }) ?? nodes.values.sorted(by: { $0.name.rawValue < $1.name.rawValue }) {
                try activate(node)
            }
        } else {
            try await inactivate(named.map { nodesToInactivate(below: $0) } ?? allActiveNodesTopDown(),
                                 failure: named == nil ? "Failed to inactivate all nodes" : "Failed to inactivate node")
        }
    }

    /// Activates a node, its children first (as QEMU): takes its users' permissions and
    /// image locks again (a lock conflict leaves it inactive, with the error), re-reads the
    /// size and lets its BlockBackends take requests again. An export whose capacity
    /// changed tells its guest, as block_resize does.
    public func activate(node name: NodeName) throws(BlockError) {
        ControlActor.preconditionOnControlThread("activate")
        guard let node = nodes[name] else { throw BlockError(errno: ENOENT, "Failed to find node with node-name='\(name)'") }
        try activate(node)
    }

    private func activate(_ node: BlockNode) throws(BlockError) {
        for child in node.children { try activate(child) }
        guard !node.isActive else { return }
        node.isActive = true
        do {
            try node.updateLocks()
        } catch {
            node.isActive = false
            try? node.updateLocks()
            throw BlockError(errno: error.errno, "Failed to activate node '\(node.name)': \(error.message); the node stays inactive (inactivate it in the other process first: blockdev-set-active with active false)")
        }
        let sizeChanged = node.driver.refreshLength()
        // (A filter's BlockBackends see its child's new size: compare with the held capacity.)
        var resized: [BlockBackend] = []
        for backend in users(of: node.name) {
            guard let heldLength = heldWhileInactive.removeValue(forKey: ObjectIdentifier(backend)) else { continue }
            resume(backend)
            if backend.length != heldLength { resized.append(backend) }
        }
        for backend in resized { _ = deviceOps[ObjectIdentifier(backend)]?.resized() }
        Logger(label: "spindle.block").notice("node activated: image locks taken, requests flow", metadata: [
            "node": "\(node.name)", "size": "\(node.length)", "resized": "\(sizeChanged)"])
    }

    /// The node and, below it, every child that no active node will use any more (QEMU:
    /// children in use by a still active node stay active). Parents before children.
    private func nodesToInactivate(below top: BlockNode) -> [BlockNode] {
        guard top.isActive else { return [] }
        var chosen: [BlockNode] = [top]
        var index = 0
        while index < chosen.count {
            for child in chosen[index].children where child.isActive && !chosen.contains(where: { $0 === child }) {
                let activeParents = child.parents.compactMap { nodes[$0] }.filter { parent in
                    parent.isActive && !chosen.contains { $0 === parent }
                }
                let activeUsers = users(of: child.name).filter { !inactiveAllowed.contains(ObjectIdentifier($0)) }
                if activeParents.isEmpty && activeUsers.isEmpty && child.blocker == nil { chosen.append(child) }
            }
            index += 1
        }
        return chosen
    }

    /// Every active node, filters before the nodes they are built on.
    private func allActiveNodesTopDown() -> [BlockNode] {
        var remaining = nodes.values.filter(\.isActive).sorted { $0.name.rawValue < $1.name.rawValue }
        var ordered: [BlockNode] = []
        while !remaining.isEmpty {
            let ready = remaining.filter { node in !node.parents.contains { parent in remaining.contains { $0.name == parent } } }
            guard !ready.isEmpty else { return ordered + remaining }  // no cycles exist; never loop on one
            ordered += ready
            remaining.removeAll { node in ready.contains { $0 === node } }
        }
        return ordered
    }

    /// Inactivates `targets` (parents first) or none: refused while an active node outside
    /// them is built on one, a job uses one, or an export without allow-inactive uses one.
    /// Then drains their BlockBackends (in-flight requests complete; new ones wait in the
    /// rings), flushes the images to disk and drops every permission and image lock.
    private func inactivate(_ targets: [BlockNode], failure: String) async throws(BlockError) {
        for node in targets {
            let activeParents = node.parents.filter { parent in
                nodes[parent]?.isActive == true && !targets.contains { $0.name == parent }
            }
            if !activeParents.isEmpty {
                let names = activeParents.map(\.rawValue).sorted().joined(separator: "', '")
                throw BlockError(errno: EPERM, "Node has active parent node: '\(names)' is active and built on '\(node.name)'; inactivate '\(names)' instead (its children follow)")
            }
            if let blocker = node.blocker { throw BlockError(errno: EBUSY, "Node '\(node.name)' is busy: \(blocker)") }
            if let export = users(of: node.name).first(where: { !inactiveAllowed.contains(ObjectIdentifier($0)) }) {
                throw BlockError(errno: EPERM, "\(failure): Operation not permitted (export '\(export.name)' uses node '\(node.name)' and was added without allow-inactive; delete it, or add it with allow-inactive true)")
            }
        }
        // Every quiesce begins before the first wait, so a command that runs meanwhile sees
        // them all held (and a second inactivation does not hold them twice).
        let backends = targets.flatMap { users(of: $0.name) }.filter { heldWhileInactive[ObjectIdentifier($0)] == nil }
        for backend in backends {
            _ = beginDrain(backend)
            heldWhileInactive[ObjectIdentifier(backend)] = backend.length
        }
        // One deleted meanwhile is no longer held (detach let it go): nothing to wait for.
        for backend in backends where heldWhileInactive[ObjectIdentifier(backend)] != nil {
            await waitUntilDrained(backend)
        }
        do {
            for node in targets { try node.driver.flushToDisk() }
        } catch {
            for backend in backends where heldWhileInactive.removeValue(forKey: ObjectIdentifier(backend)) != nil { resume(backend) }
            throw BlockError(errno: error.errno, "\(failure): \(error.message); the nodes stay active")
        }
        for node in targets {
            node.isActive = false
            try? node.updateLocks()  // releasing cannot conflict
            Logger(label: "spindle.block").notice("node inactivated: flushed, image locks released, requests wait", metadata: [
                "node": "\(node.name)"])
        }
    }
}
