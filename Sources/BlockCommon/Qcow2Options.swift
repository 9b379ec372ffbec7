/// `driver=qcow2`: a qcow2 image in the node `file` (or in a file described inline, the
/// JSON form's nested `file`), over `backing`.
public struct Qcow2Options: Sendable, Equatable {
    public enum File: Sendable, Equatable {
        /// `file=<node-name>`: an existing node (driver=file).
        case node(NodeName)
        /// `"file": {"driver": "file", "filename": ...}`: opened with the qcow2 node and
        /// owned by it.
        case inline(FileOptions)
    }

    public enum Backing: Sendable, Equatable {
        /// No `backing` key: the chain the image's header names (relative names against the
        /// image's folder, the backing format honoured).
        case fromHeader
        /// `backing=null`: no backing node; unallocated clusters read zeroes.
        case none
        /// `backing=<node-name>`: an existing node.
        case node(NodeName)
    }

    public var file: File
    public var backing: Backing = .fromHeader
    /// `l2-cache-size=BYTES`; nil: QEMU's default (the whole image's tables, at most 32 MiB).
    public var l2CacheSize: UInt64?
    public var readOnly: Bool = false
    public init(file: File) { self.file = file }

    public var childNodeNames: [NodeName] {
        var names: [NodeName] = []
        if case .node(let name) = file { names.append(name) }
        if case .node(let name) = backing { names.append(name) }
        return names
    }
}
