import BlockCommon
import BlockIO
import ControlThread

/// `driver=null-co`: no image; every request succeeds at once (NullIO). Takes any size.
@ControlActor
final class NullDriver: BlockDriver {
    private let null: NullIO
    private let node: NodeName

    private init(null: NullIO, node: NodeName) {
        self.null = null
        self.node = node
    }

    static func open(_ options: NullOptions, node: NodeName, nodes: [NodeName: BlockNode]) throws(BlockError) -> NullDriver {
        NullDriver(null: NullIO(length: options.size, readZeroes: options.readZeroes, writable: !options.readOnly), node: node)
    }

    var io: any BlockDriverIO { null }
    var children: [BlockNode] { [] }
    func applyPermissions(_ users: [BlockPermissions]) throws(BlockError) {}  // nothing to lock
    func resize(to size: UInt64) throws(BlockError) { null.setLength(size) }
    func close() {}
    func flushToDisk() throws(BlockError) {}
    func refreshLength() -> Bool { false }
    var display: BlockNodeDisplay { BlockNodeDisplay(file: node.rawValue) }
}
