import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging

/// block-commit into a base smaller than its top (GS: control thread): as QEMU, the base
/// grows to top's size before anything is copied (block_resize's way: a qcow2 base gets a
/// larger header size and L1 table, a raw file base is ftruncate'd). Everything reading
/// through the base is drained meanwhile; a qcow2 base's new data path then replaces the
/// old one in its users and in the layer above it.
extension BlockGraph {
    public func growCommitBase(_ base: BlockNode, to size: UInt64) async throws(BlockError) {
        ControlActor.preconditionOnControlThread("growCommitBase")
        let oldSize = base.length
        guard size > oldSize else { return }
        let refusal = { (why: String) in
            BlockError(errno: ENOTSUP, "Base node '\(base.name)' is \(oldSize) bytes, smaller than the top (\(size) bytes), and cannot grow: \(why)")
        }
        // Only qcow2 overlays may read it: their backing is repointed below; a filter would
        // keep reading the old data path.
        for parent in base.parents {
            guard let node = nodes[parent], node.driver is Qcow2Driver else {
                throw refusal("node '\(parent)' is built on it (a filter or I/O limits); lift it first")
            }
        }
        let affected = nodesReading(through: base).flatMap { users(of: $0.name) }
        try await withDrained(affected) { () throws(BlockError) in
            let before = base.io
            do throws(BlockError) {
                try base.resize(to: size)
            } catch {
                throw refusal(error.message)
            }
            adoptResizedDataPath(of: base, replacing: before)
        }
        Logger(label: "spindle.block").notice("commit base grown to its top's size", metadata: ["node": "\(base.name)", "from": "\(oldSize)", "to": "\(size)"])
    }
}
