/// Options of a vhost-user-blk export as given by `--export` (or, later, QMP `block-export-add`).
public struct VhostUserBlkExportOptions: Sendable, Equatable {
    public var id: String
    public var nodeName: NodeName
    public var socketPath: String
    public var writable: Bool = false
    /// `writethrough=on`: report the write cache as off and make every write durable before completing.
    public var writethrough: Bool = false
    public var numQueues: Int = 1
    public var logicalBlockSize: UInt32 = 512
    public var serial: String? = nil
    /// IOThread object id (`iothread=`); nil means the default IOThread.
    public var iothread: String? = nil
    public init(id: String, nodeName: NodeName, socketPath: String) {
        self.id = id
        self.nodeName = nodeName
        self.socketPath = socketPath
    }
}
