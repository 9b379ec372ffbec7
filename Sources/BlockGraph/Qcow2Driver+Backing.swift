import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging
import Qcow2Format

/// Where a qcow2 node is in the chain being opened: how deep, which images it went through
/// (their real paths, to refuse loops), and who to name in errors.
struct Qcow2ChainOpening {
    /// Deeper chains are refused: each layer holds a file descriptor and an L2 cache.
    static let maximumDepth = 100
    var depth = 0
    var topNode: NodeName?
    var visited: [String] = []
    let logger = Logger(label: "spindle.block")

    func entering(path: String) -> Qcow2ChainOpening {
        var next = self
        next.depth += 1
        next.visited.append(Self.realPath(path))
        return next
    }

    static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// The backing layer a qcow2 node was given or opened, for its data path and for display.
struct Qcow2OpenedBacking {
    var io: Qcow2Backing
    var child: Qcow2Driver.Child?
    var display: Qcow2BackingDisplay?
}

/// What query-named-block-nodes shows of a backing chain (QEMU's backing_file,
/// backing_file_depth).
struct Qcow2BackingDisplay {
    var filename: String
    var format: String
    var depth: Int
}

/// QEMU's default L2 cache (docs/qcow2-cache.txt): enough for every table of the image, at
/// most 32 MiB on Linux.
enum Qcow2CacheSizing {
    static let maximumDefaultBytes: UInt64 = 32 << 20

    static func defaultBytes(for layout: Qcow2Layout) -> UInt64 {
        min(maximumDefaultBytes, max(1, layout.l2TablesNeeded) * layout.clusterSize)
    }
}

extension Qcow2Driver {
    /// The backing layer: none, the node `backing=` names, or the file the header names.
    static func openBacking(_ choice: Qcow2Options.Backing, header: Qcow2Header, imagePath: String,
                            nodes: [NodeName: BlockNode], chain: Qcow2ChainOpening) throws(BlockError) -> Qcow2OpenedBacking {
        let subject = "qcow2 image '\(imagePath)'"
        switch choice {
        case .none:
            return Qcow2OpenedBacking(io: .none)
        case .node(let name):
            guard let node = nodes[name] else {
                throw BlockError(errno: ENOENT, "\(subject): its backing node '\(name)' does not exist; add that node first")
            }
            if let blocker = node.blocker { throw BlockError(errno: EBUSY, "Node '\(node.name)' is busy: \(blocker)") }
            let display = Qcow2BackingDisplay(filename: node.display.file, format: node.driverName, depth: 1 + ((node.driver as? Qcow2Driver)?.backingDisplay?.depth ?? 0))
            if let qcow2 = node.io as? Qcow2IO { return Qcow2OpenedBacking(io: .qcow2(qcow2), child: .node(node), display: display) }
            if let file = node.io as? FileIO, case .file(let options) = node.options.driver, !options.direct {
                return Qcow2OpenedBacking(io: .raw(file), child: .node(node), display: display)
            }
            throw BlockError(errno: ENOTSUP, "\(subject): backing node '\(name)' (driver \(node.driverName)) cannot back a qcow2 node; use a qcow2 node or a file node without cache.direct")
        case .fromHeader:
            guard let name = header.backingFileName else { return Qcow2OpenedBacking(io: .none) }
            return try openBackingFile(name, format: header.backingFormat, imagePath: imagePath, chain: chain)
        }
    }

    private static func openBackingFile(_ name: String, format: String?, imagePath: String, chain: Qcow2ChainOpening) throws(BlockError) -> Qcow2OpenedBacking {
        let subject = "qcow2 image '\(imagePath)'"
        if name.hasPrefix("json:") || name.contains("://") {
            throw BlockError(errno: ENOTSUP, "\(subject): backing file '\(name)' is not a plain path; give the backing node with backing=<node>")
        }
        // Relative names are relative to the image's own folder, as in QEMU.
        var path = name
        if !name.hasPrefix("/") {
            let folder = imagePath.contains("/") ? String(imagePath[..<imagePath.lastIndex(of: "/")!]) : "."
            path = (folder.isEmpty ? "/" : folder + "/") + name
        }
        let real = Qcow2ChainOpening.realPath(path)
        if chain.visited.contains(real) {
            throw BlockError(errno: ELOOP, "\(subject): the backing chain loops (\((chain.visited + [real]).joined(separator: " -> "))); fix it with qemu-img rebase -u")
        }
        guard chain.depth < Qcow2ChainOpening.maximumDepth else {
            throw BlockError(errno: ELOOP, "\(subject): the backing chain is deeper than \(Qcow2ChainOpening.maximumDepth) images")
        }
        // Probed even when the header names the format: a missing file is reported here
        // with the image that names it, not with the generated name of its node.
        let probed = try probeFormat(path, subject: subject)
        let resolvedFormat = format ?? probed
        var file = FileOptions(filename: path)
        file.readOnly = true
        // Each layer becomes an implicit node of the graph (ImplicitNodes.swift), named in
        // errors by the node that opened the chain.
        switch resolvedFormat {
        case "qcow2":
            var options = Qcow2Options(file: .inline(file))
            options.readOnly = true
            let name = ImplicitNodeName.next()
            let driver = try Qcow2Driver.open(options, node: name, nodes: [:], chain: chain)
            let depth = 1 + (driver.backingDisplay?.depth ?? 0)
            let layer = BlockNode(name: name, options: BlockdevOptions(nodeName: name, driver: .qcow2(options)), driver: driver, implicit: true)
            return Qcow2OpenedBacking(io: .qcow2(driver.image), child: .node(layer),
                                      display: Qcow2BackingDisplay(filename: path, format: "qcow2", depth: depth))
        case "raw":
            let name = ImplicitNodeName.next()
            let driver = try FileDriver.open(file, node: name, nodes: [:])
            guard let io = driver.io as? FileIO else {
                driver.close()
                throw BlockError(errno: EINVAL, "\(subject): backing file '\(path)' is not a plain file")
            }
            let layer = BlockNode(name: name, options: BlockdevOptions(nodeName: name, driver: .file(file)), driver: driver, implicit: true)
            return Qcow2OpenedBacking(io: .raw(io), child: .node(layer), display: Qcow2BackingDisplay(filename: path, format: "raw", depth: 1))
        default:
            throw BlockError(errno: ENOTSUP, "\(subject): backing file '\(path)' has format '\(resolvedFormat)'; only qcow2 and raw backing files are supported")
        }
    }

    /// No backing format in the header (old images): qcow2 if the file starts with its
    /// magic, else raw (QEMU probes the same way and warns).
    private static func probeFormat(_ path: String, subject: String) throws(BlockError) -> String {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            throw BlockError(errno: e, "\(subject): cannot open its backing file '\(path)': \(String(cString: strerror(e)))")
        }
        defer { Glibc.close(fd) }
        var magic: UInt32 = 0
        let got = Glibc.pread(fd, &magic, 4, 0)
        return got == 4 && UInt32(bigEndian: magic) == Qcow2Header.magic ? "qcow2" : "raw"
    }
}
