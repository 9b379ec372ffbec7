import BlockCommon
import ControlThread
import Glibc

/// block-stream's `bottom` (GS: control thread): the lowest layer streamed, given as a node
/// name, is turned into the base the stream plan already understands: the layer below it
/// (`base-node` if it is a graph node, else its file name), or none (the whole chain).
extension BlockGraph {
    /// The base for streaming `device`'s chain down to and including `bottom`. QEMU's texts
    /// (blockdev.c qmp_block_stream); `backingFile` is refused with `bottom` as QEMU does
    /// (it sets no base then).
    public func streamBase(device: NodeName, bottom: NodeName, backingFile: String?) throws(BlockError) -> (base: String?, baseNode: NodeName?) {
        ControlActor.preconditionOnControlThread("streamBase")
        guard let top = nodes[device] else {
            throw BlockError(errno: ENOENT, "Cannot find device='\(device)' nor node-name='\(device)'")
        }
        guard nodes[bottom] != nil else {
            throw BlockError(errno: ENOENT, "Cannot find device='' nor node-name='\(bottom)'")
        }
        if backingFile != nil {
            throw BlockError(errno: EINVAL, "backing file specified, but streaming the entire chain")
        }
        let layers = chainLayers(below: top)
        let index: Int
        if bottom == top.name {
            index = -1  // QEMU's chain starts at the device itself: nothing to copy
        } else {
            guard let found = layers.firstIndex(where: { $0.node == bottom || $0.implicitNode == bottom }) else {
                throw BlockError(errno: EINVAL, "Node '\(bottom)' is not in a chain starting from '\(device)'")
            }
            index = found
        }
        guard index + 1 < layers.count else { return (nil, nil) }
        let base = layers[index + 1]
        if let name = base.node ?? base.implicitNode { return (nil, name) }
        return (base.filename, nil)
    }
}
