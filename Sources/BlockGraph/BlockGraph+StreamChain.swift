import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// One image below a qcow2 node in its backing chain.
public struct ChainLayer: Sendable {
    /// The image's path as the chain opened it.
    public let filename: String
    /// "qcow2" or "raw" (what a header's backing format extension names).
    public let format: String
    /// The graph node it is, or nil: the layer above opened it from its header (owned).
    public let node: NodeName?
    public let io: Qcow2Backing
    /// The implicit node a layer opened from its header is (`#block...`; nil for a node a
    /// user added): block-stream's `base-node` may name it.
    public var implicitNode: NodeName? = nil
}

/// What block-stream copies and what the top node backs onto afterwards.
public struct StreamPlan: Sendable {
    public let top: NodeName
    public let topIO: Qcow2IO
    /// The layers whose data is pulled into the top (below it, above the base).
    public let copied: [ChainLayer]
    /// The new backing (nil: the whole chain is streamed, the top stands alone).
    public let base: ChainLayer?
    /// The name the top's header gets for the base (`backing-file`, else the base's path).
    public let backingFileName: String?
}

/// block-stream's checks and chain look-ups (GS: control thread). QEMU's texts where it has
/// one (blockdev.c qmp_block_stream), Spindle's own for what it does not support.
extension BlockGraph {
    /// The chain below `node` (a qcow2 node), top first.
    func chainLayers(below node: BlockNode) -> [ChainLayer] {
        var layers: [ChainLayer] = []
        var driver = node.driver as? Qcow2Driver
        while let current = driver, let child = current.backing {
            let below: any BlockDriver
            let name: NodeName?
            var implicit: NodeName?
            switch child {
            case .node(let graphNode):
                below = graphNode.driver
                name = graphNode.isImplicit ? nil : graphNode.name
                implicit = graphNode.isImplicit ? graphNode.name : nil
            case .owned(let owned):
                below = owned
                name = nil
            }
            if let qcow2 = below.io as? Qcow2IO {
                layers.append(ChainLayer(filename: below.display.file, format: "qcow2", node: name, io: .qcow2(qcow2), implicitNode: implicit))
            } else if let file = below.io as? FileIO {
                layers.append(ChainLayer(filename: below.display.file, format: "raw", node: name, io: .raw(file), implicitNode: implicit))
            } else {
                break
            }
            driver = below as? Qcow2Driver
        }
        return layers
    }

    /// Checks a block-stream request and says what it will copy. `base` is a file name,
    /// `baseNode` a node name (at most one of them).
    public func streamPlan(device: NodeName, base: String?, baseNode: NodeName?, backingFile: String?) throws(BlockError) -> StreamPlan {
        ControlActor.preconditionOnControlThread("streamPlan")
        guard let top = nodes[device] else {
            throw BlockError(errno: ENOENT, "Cannot find device='\(device)' nor node-name='\(device)'")
        }
        if base != nil && baseNode != nil {
            throw BlockError(errno: EINVAL, "'base' and 'base-node' cannot be specified at the same time")
        }
        if let blocker = top.blocker { throw BlockError(errno: EBUSY, "Node '\(top.name)' is busy: \(blocker)") }
        guard top.isActive else {
            throw BlockError(errno: EPERM, "Node '\(top.name)' is inactive; activate it first (blockdev-set-active)")
        }
        guard let topIO = top.io as? Qcow2IO, top.driver is Qcow2Driver else {
            throw BlockError(errno: ENOTSUP, "Node '\(top.name)' is a \(top.driverName) node; block-stream needs a qcow2 node with a backing chain")
        }
        guard top.parents.isEmpty else {
            let names = top.parents.map(\.rawValue).sorted().joined(separator: "', '")
            throw BlockError(errno: ENOTSUP, "Node '\(top.name)' has node '\(names)' built on it; Spindle streams only into the top of a chain with no filter over it (lift I/O limits first)")
        }
        guard topIO.writable else { throw BlockError(errno: EROFS, "Block node is read-only") }
        let layers = chainLayers(below: top)
        var baseIndex = layers.count
        if let baseNode {
            guard let baseGraphNode = nodes[baseNode] else {
                throw BlockError(errno: ENOENT, "Cannot find device= nor node-name=\(baseNode)")
            }
            guard let index = layers.firstIndex(where: { $0.node == baseGraphNode.name || $0.implicitNode == baseGraphNode.name }) else {
                throw BlockError(errno: EINVAL, "Node '\(baseNode)' is not a backing image of '\(device)'")
            }
            baseIndex = index
        } else if let base {
            let wanted = Self.resolvedPath(base, relativeTo: topIOFolder(top))
            guard let index = layers.firstIndex(where: { $0.filename == base || Self.resolvedPath($0.filename, relativeTo: nil) == wanted }) else {
                throw BlockError(errno: ENOENT, "Can't find '\(base)' in the backing chain")
            }
            baseIndex = index
        }
        if backingFile != nil && baseIndex == layers.count {
            throw BlockError(errno: EINVAL, "backing file specified, but streaming the entire chain")
        }
        let baseLayer = baseIndex < layers.count ? layers[baseIndex] : nil
        if let backingFile, let baseLayer, baseLayer.node == nil,
           Self.resolvedPath(backingFile, relativeTo: topIOFolder(top)) != Self.resolvedPath(baseLayer.filename, relativeTo: nil) {
            // The top is opened again from its header after the stream: the name must lead there.
            throw BlockError(errno: ENOTSUP, "backing-file '\(backingFile)' does not name the base image '\(baseLayer.filename)'; Spindle opens the base by that name afterwards (give the base as a node, base-node, to name it freely)")
        }
        for layer in layers[..<baseIndex] {
            if let name = layer.node, let blocker = nodes[name]?.blocker {
                throw BlockError(errno: EBUSY, "Node '\(name)' is busy: \(blocker)")
            }
        }
        return StreamPlan(top: top.name, topIO: topIO, copied: Array(layers[..<baseIndex]), base: baseLayer,
                          backingFileName: baseLayer.map { backingFile ?? $0.filename })
    }

    /// The folder the top's image is in (relative backing names are relative to it).
    private func topIOFolder(_ top: BlockNode) -> String {
        let path = top.display.file
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }

    static func resolvedPath(_ path: String, relativeTo folder: String?) -> String {
        let joined = path.hasPrefix("/") || folder == nil ? path : folder! + "/" + path
        guard let real = realpath(joined, nil) else { return joined }
        defer { free(real) }
        return String(cString: real)
    }
}
