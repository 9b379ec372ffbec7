import BlockCommon
import ControlThread
import Glibc
import Logging

/// blockdev-reopen (QEMU 7.2's shape: the full options of each node). Spindle changes
/// `read-only` (and `auto-read-only`) of file and qcow2 nodes; any other option that differs
/// from the node's current one is refused, named as QEMU names it. All nodes are checked
/// before any changes; if one fails, those reopened before it go back.
extension BlockGraph {
    public func reopen(options list: [BlockdevOptions]) async throws(BlockError) {
        ControlActor.preconditionOnControlThread("reopen(options:)")
        var plan: [(node: BlockNode, readOnly: Bool, autoReadOnly: Bool?)] = []
        for requested in list {
            guard let node = nodes[requested.nodeName] else {
                throw BlockError(errno: ENOENT, "Failed to find node with node-name='\(requested.nodeName)'")
            }
            guard !plan.contains(where: { $0.node === node }) else {
                throw BlockError(errno: EINVAL, "Node '\(node.name)' is given twice; reopen each node once")
            }
            if let option = Self.unchangeableOption(current: node.options, requested: requested) {
                throw BlockError(errno: EINVAL, "Cannot change the option '\(option)'")
            }
            switch node.options.driver {
            case .file, .qcow2: break
            default:
                // Nothing else can be reopened; an unchanged node passes (as QEMU).
                guard requested == node.options else {
                    throw BlockError(errno: ENOTSUP, "Block format '\(node.driverName)' used by node '\(node.name)' does not support reopening files")
                }
            }
            if requested.readOnly != node.readOnly, let blocker = node.blocker {
                throw BlockError(errno: EBUSY, "Node '\(node.name)' is busy: \(blocker)")
            }
            var autoReadOnly: Bool?
            if case .file(let file) = requested.driver { autoReadOnly = file.autoReadOnly }
            plan.append((node, requested.readOnly, autoReadOnly))
        }
        var done: [(node: BlockNode, wasReadOnly: Bool)] = []
        for step in plan {
            let wasReadOnly = step.node.readOnly
            let before = step.node.options
            do throws(BlockError) {
                if let autoReadOnly = step.autoReadOnly, case .file(var file) = step.node.options.driver {
                    file.autoReadOnly = autoReadOnly
                    step.node.options.driver = .file(file)
                }
                try await reopenDrained(step.node, readOnly: step.readOnly)
                done.append((step.node, wasReadOnly))
            } catch {
                if step.node.readOnly == wasReadOnly { step.node.options = before }
                for undo in done.reversed() {
                    do throws(BlockError) {
                        try await reopenDrained(undo.node, readOnly: undo.wasReadOnly)
                    } catch {
                        Logger(label: "spindle.block").error("blockdev-reopen failed and node '\(undo.node.name)' could not be given its mode back: \(error.message)")
                    }
                }
                throw error
            }
        }
    }

    /// The first option (QEMU's name) that `requested` changes and Spindle cannot, if any.
    /// An omitted `backing` keeps the current one.
    static func unchangeableOption(current: BlockdevOptions, requested: BlockdevOptions) -> String? {
        if current.active != requested.active { return "active" }
        switch (current.driver, requested.driver) {
        case (.file(let now), .file(let wanted)):
            return unchangeableFileOption(now, wanted)
        case (.qcow2(let now), .qcow2(let wanted)):
            switch (now.file, wanted.file) {
            case (.node(let a), .node(let b)) where a == b: break
            case (.inline(let a), .inline(let b)):
                if let option = unchangeableFileOption(a, b) { return option }
            default: return "file"
            }
            if wanted.backing != .fromHeader && wanted.backing != now.backing { return "backing" }
            if now.l2CacheSize != wanted.l2CacheSize { return "l2-cache-size" }
            return nil
        default:
            return current.driver.driverName != requested.driver.driverName ? "driver" : nil
        }
    }

    private static func unchangeableFileOption(_ now: FileOptions, _ wanted: FileOptions) -> String? {
        if now.filename != wanted.filename { return "filename" }
        if now.direct != wanted.direct { return "cache.direct" }
        if now.noFlush != wanted.noFlush { return "cache.no-flush" }
        if now.locking != wanted.locking { return "locking" }
        if now.discardUnmap != wanted.discardUnmap { return "discard" }
        return nil
    }
}
