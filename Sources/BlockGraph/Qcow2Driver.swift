import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Qcow2Format

/// `driver=qcow2`: a qcow2 image in a `file` node, over a backing node or the chain its
/// header names. Open reads the header and the L1 table here, on the control thread; the
/// data path (Qcow2IO) serves reads and writes on the IOThreads, with its allocator
/// (Qcow2Allocator) for writes that need new clusters.
///
/// Children are either graph nodes (`file=<node>`, `backing=<node>`, and the implicit nodes
/// of the backing chain its header names: this node is their user, so they cannot be
/// deleted under it; the implicit ones close with it) or opened by this node and owned by
/// it (an inline file object), closed with it.
@ControlActor
final class Qcow2Driver: BlockDriver {
    /// A child this node uses: a node of the graph, or a driver of its own.
    enum Child {
        case node(BlockNode)
        case owned(any BlockDriver)
    }

    let node: NodeName
    let file: Child
    /// Changed only by a commit, under drain (BlockGraph+CommitSwitch.swift).
    var backing: Child?
    /// Replaced (under drain) only by a resize (Qcow2Driver+Resize).
    var image: Qcow2IO
    let filename: String
    var header: Qcow2Header
    /// How the data path reports corrupt metadata to this driver (Qcow2Driver+Corruption).
    let corruptionRelay: Qcow2CorruptionRelay
    /// Called once the image was found corrupt (BlockGraph+Corruption sets it).
    var onCorruption: (@ControlActor (Qcow2CorruptionFinding) -> Void)?
    /// Whether this image's corruption was handled (events once per node).
    var corruptionHandled = false
    /// What query-named-block-nodes shows of the backing chain (nil: none).
    var backingDisplay: Qcow2BackingDisplay?

    private init(node: NodeName, file: Child, backing: Child?, image: Qcow2IO, filename: String, header: Qcow2Header,
                 backingDisplay: Qcow2BackingDisplay?, corruptionRelay: Qcow2CorruptionRelay) {
        self.corruptionRelay = corruptionRelay
        self.node = node
        self.file = file
        self.backing = backing
        self.image = image
        self.filename = filename
        self.header = header
        self.backingDisplay = backingDisplay
    }


    static func open(_ options: Qcow2Options, node: NodeName, nodes: [NodeName: BlockNode]) throws(BlockError) -> Qcow2Driver {
        try open(options, node: node, nodes: nodes, chain: Qcow2ChainOpening(topNode: node))
    }

    static func open(_ options: Qcow2Options, node: NodeName, nodes: [NodeName: BlockNode], chain: Qcow2ChainOpening) throws(BlockError) -> Qcow2Driver {
        let subject = chain.depth == 0 ? "qcow2 node '\(node)'" : "qcow2 backing file of node '\(chain.topNode ?? node)'"
        let (file, fileIO, filename) = try openFile(options.file, node: node, nodes: nodes, subject: subject)
        var opened: Qcow2OpenedBacking?
        let driver: Qcow2Driver
        do throws(BlockError) {
            let reader = Qcow2ImageReader(fd: fileIO.fd, fileLength: fileIO.length, subject: "\(subject) ('\(filename)')")
            let read = try reader.read(readOnly: options.readOnly)
            let writing = options.readOnly ? nil : try reader.prepareWriting(read, fileWritable: fileIO.writable)
            let backing = try openBacking(options.backing, header: read.header, imagePath: filename, nodes: nodes,
                                          chain: chain.entering(path: filename))
            opened = backing
            let cacheBytes = options.l2CacheSize ?? Qcow2CacheSizing.defaultBytes(for: read.layout)
            guard let cache = Qcow2L2Cache(bytes: cacheBytes, tableBytes: Int(read.layout.clusterSize)) else {
                throw BlockError(errno: ENOMEM, "\(subject): cannot map \(cacheBytes) bytes for the L2 cache (lower l2-cache-size)")
            }
            let logger = chain.logger
            var allocator: Qcow2Allocator?
            if let writing {
                let chainClusterSize = max(Int(read.layout.clusterSize), backing.io.chainClusterSize)
                allocator = try reader.makeAllocator(read, writing, chainClusterSize: chainClusterSize, subject: subject)
            }
            let relay = Qcow2CorruptionRelay()
            let io = Qcow2IO(layout: read.layout, fd: fileIO.fd, l2TableOffsets: read.l2TableOffsets, cache: cache,
                             backing: backing.io, allocator: allocator,
                             reportCorruption: relay.reporter(subject: subject, filename: filename, logger: logger))
            driver = Qcow2Driver(node: node, file: file, backing: backing.child, image: io, filename: filename,
                                 header: read.header, backingDisplay: backing.display, corruptionRelay: relay)
            relay.driver = driver
            if read.corruptL1Entries > 0 {
                chain.logger.warning("\(subject): \(read.corruptL1Entries) L1 entries of '\(filename)' are corrupt; reads of the guest ranges they map fail with EIO (check the image with qemu-img check)")
            }
        } catch {
            if let child = opened?.child { release(child, user: nil) }
            release(file, user: nil)
            throw error
        }
        do throws(BlockError) {
            // Node children count this node as a user (no permissions until it has users).
            for case .node(let child) in [file] + (driver.backing.map { [$0] } ?? []) {
                try child.setUser(driver, permissions: [])
            }
        } catch {
            driver.close()
            throw error
        }
        return driver
    }

    /// The image's file: an existing `file` node, or one described inline (owned).
    private static func openFile(_ file: Qcow2Options.File, node: NodeName, nodes: [NodeName: BlockNode], subject: String) throws(BlockError)
        -> (Child, FileIO, String) {
        switch file {
        case .node(let name):
            guard let child = nodes[name] else {
                throw BlockError(errno: ENOENT, "\(subject): its file node '\(name)' does not exist; add that node first")
            }
            if let blocker = child.blocker { throw BlockError(errno: EBUSY, "Node '\(child.name)' is busy: \(blocker)") }
            guard case .file(let options) = child.options.driver, let io = child.io as? FileIO else {
                throw BlockError(errno: EINVAL, "\(subject): its file node '\(name)' must be a driver=file node, not \(child.driverName)")
            }
            guard !options.direct else {
                throw BlockError(errno: ENOTSUP, "\(subject): cache.direct=on under qcow2 is not supported yet; open '\(name)' without it")
            }
            return (.node(child), io, options.filename)
        case .inline(let options):
            guard !options.direct else {
                throw BlockError(errno: ENOTSUP, "\(subject): cache.direct=on under qcow2 is not supported yet; drop file.cache.direct")
            }
            let driver = try FileDriver.open(options, node: node, nodes: [:])
            guard let io = driver.io as? FileIO else {
                driver.close()
                throw BlockError(errno: EINVAL, "\(subject): its file is not a plain file")
            }
            return (.owned(driver), io, options.filename)
        }
    }

    /// Closes an owned child, or stops using a node child; an implicit node (a layer opened
    /// from the header) closes with its last user, the graph then forgets it.
    static func release(_ child: Child, user: AnyObject?) {
        switch child {
        case .node(let node):
            if let user { node.removeUser(user) }
            if node.isImplicit && node.userCount == 0 && !node.isClosed { node.close() }
        case .owned(let driver):
            try? driver.applyPermissions([])
            driver.close()
        }
    }

    var io: any BlockDriverIO { image }
    var children: [BlockNode] {
        var nodes: [BlockNode] = []
        if case .node(let child) = file { nodes.append(child) }
        if case .node(let child)? = backing { nodes.append(child) }
        return nodes
    }

    /// Reading needs consistent reads of the file and of the backing chain; a writable node
    /// also writes its file (metadata included) while it has users.
    func applyPermissions(_ users: [BlockPermissions]) throws(BlockError) {
        let reading: BlockPermissions = users.isEmpty ? [] : [.consistentRead]
        let fileNeeds = reading.union(image.writable && !users.isEmpty ? [.write] : [])
        for (child, needed) in [(file, fileNeeds)] + (backing.map { [($0, reading)] } ?? []) {
            switch child {
            case .node(let node): try node.setUser(self, permissions: needed)
            case .owned(let driver): try driver.applyPermissions(users.isEmpty ? [] : [needed])
            }
        }
    }

    func close() {
        if let allocator = image.allocator, allocator.close() < 0 {
            Qcow2ChainOpening().logger.warning("qcow2 node '\(node)': could not give back the clusters reserved for allocation in '\(filename)'; qemu-img check will report them as leaked (harmless; qemu-img check -r leaks removes them)")
        }
        Self.release(file, user: self)
        if let backing { Self.release(backing, user: self) }
    }

    /// Metadata is written through by the allocation path: one fdatasync makes it durable.
    func flushToDisk() throws(BlockError) {
        guard image.writable else { return }
        while fdatasync(image.fd) != 0 {
            guard errno == EINTR else {
                throw BlockError(errno: errno, "qcow2 node '\(node)': cannot flush '\(filename)': \(String(cString: strerror(errno)))")
            }
        }
    }
    // Its size is the header's (changed only by block_resize, Qcow2Driver+Resize).
    func refreshLength() -> Bool { false }

    var display: BlockNodeDisplay {
        var shown = BlockNodeDisplay(file: filename)
        shown.clusterSize = header.clusterSize
        shown.backingFile = backingDisplay?.filename
        shown.backingFormat = backingDisplay?.format
        shown.backingDepth = backingDisplay?.depth ?? 0
        return shown
    }
}
