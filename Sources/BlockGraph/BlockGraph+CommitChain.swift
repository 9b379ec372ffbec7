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
    /// Finds top and base below `active` (QEMU's qmp_block_commit checks and texts). Every
    /// layer is a node of the graph: added with `backing=<node>`, or an implicit node the
    /// layer above opened from its image's header (named `#block...`, or by file name).
    public func commitChain(active: BlockNode, top: CommitLayerChoice, base: CommitLayerChoice) throws(BlockError) -> CommitChain {
        ControlActor.preconditionOnControlThread("commitChain")
        let chain = backingNodes(from: active)
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
                throw BlockError(errno: ENOENT, "Top image file \(file) not found")
            }
            topIndex = index
        }
        let below = chain[(topIndex + 1)...]
        let baseIndex: Int
        switch base {
        case .unnamed:
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
                throw BlockError(errno: ENOENT, "Can't find '\(file)' in the backing chain")
            }
            baseIndex = index
        }
        return CommitChain(active: active, top: chain[topIndex], base: chain[baseIndex],
                           layers: Array(chain[topIndex..<baseIndex]), overlay: topIndex > 0 ? chain[topIndex - 1] : nil)
    }

    /// The node's chain of graph nodes: itself first, then each qcow2 node's backing node
    /// (given with `backing=`, or implicit, opened from the header).
    private func backingNodes(from node: BlockNode) -> [BlockNode] {
        var chain = [node]
        while chain.count <= Qcow2ChainOpening.maximumDepth, let driver = chain.last!.driver as? Qcow2Driver,
              case .node(let next)? = driver.backing, !chain.contains(where: { $0 === next }) {
            chain.append(next)
        }
        return chain
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

    /// Whether two names denote one image file (as given, or resolved).
    static func sameImage(_ a: String, _ b: String) -> Bool {
        a == b || Qcow2ChainOpening.realPath(a) == Qcow2ChainOpening.realPath(b)
    }
}
