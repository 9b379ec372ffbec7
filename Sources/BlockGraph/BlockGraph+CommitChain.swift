import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// How block-commit names a layer: by node name (`top-node`, `base-node`), by image file
/// name (`top`, `base`), or not at all (top: the active layer; base: the bottom).
public enum CommitLayerChoice: Sendable, Equatable {
    case unnamed
    case node(String)
    case filename(String)
}

/// A commit's part of a backing chain, as found in the graph (GS: control thread).
@ControlActor
public struct CommitChain {
    /// The device's node: the active layer.
    public let active: BlockNode
    public let top: BlockNode
    public let base: BlockNode
    /// The layers whose data goes into base: top first, down to the one backed by base.
    public let layers: [BlockNode]
    /// The node whose backing node is top (nil for an active commit): after an
    /// intermediate commit it is backed by base.
    public let overlay: BlockNode?
    public var isActiveCommit: Bool { top === active }
}

extension BlockGraph {
    /// Finds top and base below `active` (QEMU's qmp_block_commit checks and texts). Only
    /// layers that are nodes of the graph (qcow2 nodes added with `backing=<node>`) can be
    /// committed: a chain a node opened from its image's header has no nodes to switch to.
    public func commitChain(active: BlockNode, top: CommitLayerChoice, base: CommitLayerChoice) throws(BlockError) -> CommitChain {
        ControlActor.preconditionOnControlThread("commitChain")
        let (chain, headerChainBelow) = backingNodes(from: active)
        let topIndex: Int
        switch top {
        case .unnamed: topIndex = 0
        case .node(let name):
            guard nodes[NodeName(name)] != nil else { throw BlockError(errno: ENOENT, "Cannot find device='' nor node-name='\(name)'") }
            guard let index = chain.firstIndex(where: { $0.name.rawValue == name }) else {
                throw BlockError(errno: EINVAL, "'\(name)' is not in this backing file chain")
            }
            topIndex = index
        case .filename(let file):
            guard let index = chain.firstIndex(where: { Self.sameImage($0.display.file, file) }) else {
                if let below = headerChainBelow { throw Self.headerChainError(below) }
                throw BlockError(errno: ENOENT, "Top image file \(file) not found")
            }
            topIndex = index
        }
        let below = chain[(topIndex + 1)...]
        let baseIndex: Int
        switch base {
        case .unnamed:
            if let below = headerChainBelow { throw Self.headerChainError(below) }
            guard chain.count > topIndex + 1 else { throw BlockError(errno: ENOENT, "There is no backimg image") }
            baseIndex = chain.count - 1
        case .node(let name):
            guard nodes[NodeName(name)] != nil else { throw BlockError(errno: ENOENT, "Cannot find device='' nor node-name='\(name)'") }
            if chain[topIndex].name.rawValue == name { throw BlockError(errno: EINVAL, "cannot commit an image into itself") }
            guard let index = below.firstIndex(where: { $0.name.rawValue == name }) else {
                throw BlockError(errno: EINVAL, "'\(name)' is not in this backing file chain")
            }
            baseIndex = index
        case .filename(let file):
            guard let index = below.firstIndex(where: { Self.sameImage($0.display.file, file) }) else {
                if let below = headerChainBelow { throw Self.headerChainError(below) }
                throw BlockError(errno: ENOENT, "Can't find '\(file)' in the backing chain")
            }
            baseIndex = index
        }
        return CommitChain(active: active, top: chain[topIndex], base: chain[baseIndex],
                           layers: Array(chain[topIndex..<baseIndex]), overlay: topIndex > 0 ? chain[topIndex - 1] : nil)
    }

    /// The node's chain of graph nodes (itself first, then each qcow2 node's `backing=`
    /// node), and the last one if it opened further layers from its image's header.
    private func backingNodes(from node: BlockNode) -> ([BlockNode], BlockNode?) {
        var chain = [node]
        while chain.count <= Qcow2ChainOpening.maximumDepth, case .qcow2(let options) = chain.last!.options.driver {
            switch options.backing {
            case .node(let name):
                guard let next = nodes[name] else { return (chain, nil) }
                chain.append(next)
            case .fromHeader:
                let opened = (chain.last!.driver as? Qcow2Driver)?.backingDisplay != nil
                return (chain, opened ? chain.last! : nil)
            case .none:
                return (chain, nil)
            }
        }
        return (chain, nil)
    }

    /// The node and every node built on it, directly or not (filters, overlays): whose
    /// reads pass through it.
    public func nodesReading(through node: BlockNode) -> [BlockNode] {
        var found = [node]
        var index = 0
        while index < found.count {
            for name in found[index].parents.sorted(by: { $0.rawValue < $1.rawValue }) {
                if let parent = nodes[name], !found.contains(where: { $0 === parent }) { found.append(parent) }
            }
            index += 1
        }
        return found
    }

    private static func headerChainError(_ node: BlockNode) -> BlockError {
        BlockError(errno: ENOTSUP, "node '\(node.name)' opened its backing chain from its image's header; Spindle commits only between nodes of the graph: add each backing image with blockdev-add and give it to the layer above with backing=<node-name>")
    }

    /// Whether two names denote one image file (as given, or resolved).
    static func sameImage(_ a: String, _ b: String) -> Bool {
        a == b || Qcow2ChainOpening.realPath(a) == Qcow2ChainOpening.realPath(b)
    }
}
