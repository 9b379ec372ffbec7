import BlockCommon
import BlockGraph
import BlockIO
import ControlThread

/// The first pass of a mirror: everything (sync=full), or with sync=top only what the
/// source's own qcow2 image holds, the rest staying with the backing chain the target
/// shares (as QEMU: the target must already back onto the same data).
@ControlActor
enum Qcow2MirrorTop {
    static func markInitialCopy(_ bitmap: DirtyBitmap, options: MirrorOptions, source: BlockNode, target: BlockNode,
                                graph: BlockGraph) throws(JobError) {
        guard options.topOnly, graph.backingFile(of: source.name) != nil else {
            bitmap.markAll()
            return
        }
        guard graph.backingFile(of: target.name) != nil else {
            throw JobError("sync=top of node '\(source.name)' needs a target that backs onto its backing file '\(graph.backingFile(of: source.name)!)' (a qcow2 target with a backing file); use sync=full to copy the whole chain")
        }
        let ranges: [Range<UInt64>]
        do {
            ranges = try graph.topLayerAllocation(of: source.name) ?? [0..<source.length]
        } catch {
            throw JobError(error.message)
        }
        for range in ranges { bitmap.markDirty(offset: range.lowerBound, length: range.upperBound - range.lowerBound) }
    }
}
