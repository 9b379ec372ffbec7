import BlockCommon
@testable import BlockGraph
import ControlThread
import Foundation
import Glibc
import Testing

/// The backing layers a qcow2 node opens from its image's header are implicit nodes of the
/// graph (`#block...`), owned by the layer above: on real images made by qemu-img, they are
/// in the node table, refused to blockdev-del, closed with their top (no descriptor left
/// open), found by block-commit's chain look-up, and a failure deep in the chain leaves none.
@Suite struct ImplicitNodeTests {
    struct Chain {
        let folder: String
        var base: String { folder + "/base.qcow2" }
        var mid: String { folder + "/mid.qcow2" }
        var top: String { folder + "/top.qcow2" }
    }

    func makeChain(_ name: String) throws -> Chain {
        let chain = Chain(folder: (NSTemporaryDirectory() as NSString).appendingPathComponent("spindle-implicit-\(name)-\(getpid())"))
        try FileManager.default.createDirectory(atPath: chain.folder, withIntermediateDirectories: true)
        for command in [["qemu-img", "create", "-q", "-f", "qcow2", chain.base, "1M"],
                        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", chain.mid],
                        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", chain.top]] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = command
            try process.run()
            process.waitUntilExit()
            try #require(process.terminationStatus == 0, "\(command) failed")
        }
        return chain
    }

    static func options(_ path: String) -> BlockdevOptions {
        var qcow2 = Qcow2Options(file: .inline(FileOptions(filename: path)))
        qcow2.readOnly = true
        return BlockdevOptions(nodeName: NodeName("d0"), driver: .qcow2(qcow2))
    }

    /// This process's descriptors open on files in `folder` (other tests' come and go).
    static func descriptors(in folder: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0) }
            .filter { $0.hasPrefix(folder) }
    }

    @Test @ControlActor func headerLayersAreImplicitNodesOwnedAndClosedByTheirTop() throws {
        let chain = try makeChain("owned")
        defer { try? FileManager.default.removeItem(atPath: chain.folder) }
        let graph = BlockGraph()
        let top = try graph.openNode(Self.options(chain.top))
        #expect(graph.nodes.count == 3 && Self.descriptors(in: chain.folder).count == 3)
        let implicit = graph.nodes.values.filter(\.isImplicit).sorted { $0.display.file < $1.display.file }
        #expect(implicit.map(\.display.file) == [chain.base, chain.mid])
        for node in implicit {
            #expect(node.name.rawValue.hasPrefix("#block") && node.readOnly && !NodeName.isValid(node.name.rawValue))
        }
        let mid = implicit[1]
        #expect(top.children.map(\.name) == [mid.name] && mid.children.map(\.name) == [implicit[0].name])
        #expect(mid.parents == [top.name])
        #expect(throws: BlockError(errno: EPERM, "Node \(mid.name) is not owned by the monitor")) { try graph.closeNode(mid.name) }
        try graph.closeNode(top.name)
        #expect(graph.nodes.isEmpty)
        #expect(Self.descriptors(in: chain.folder) == [], "every image of the chain is closed")
    }

    @Test @ControlActor func aFailureDeepInTheChainLeavesNoImplicitNode() throws {
        let chain = try makeChain("failure")
        defer { try? FileManager.default.removeItem(atPath: chain.folder) }
        try FileManager.default.removeItem(atPath: chain.base)
        let graph = BlockGraph()
        #expect(throws: BlockError.self) { try graph.openNode(Self.options(chain.top)) }
        #expect(graph.nodes.isEmpty)
        #expect(Self.descriptors(in: chain.folder) == [], "the layers opened before the failure are closed")
    }

    @Test @ControlActor func commitFindsImplicitLayersByFileAndNodeName() throws {
        let chain = try makeChain("commit")
        defer { try? FileManager.default.removeItem(atPath: chain.folder) }
        let graph = BlockGraph()
        let top = try graph.openNode(Self.options(chain.top))
        defer { try? graph.closeNode(top.name) }
        let byFile = try graph.commitChain(active: top, top: .filename(chain.mid), base: .filename(chain.base))
        #expect(byFile.top.display.file == chain.mid && byFile.base.display.file == chain.base && byFile.overlay === top)
        #expect(!byFile.isActiveCommit && byFile.layers.map(\.name) == [byFile.top.name])
        let bottom = try graph.commitChain(active: top, top: .unnamed, base: .unnamed)
        #expect(bottom.isActiveCommit && bottom.base === byFile.base && bottom.layers.count == 2)
        let byName = try graph.commitChain(active: top, top: .node(byFile.top.name.rawValue), base: .node(byFile.base.name.rawValue))
        #expect(byName.top === byFile.top && byName.base === byFile.base)
    }
}
