/// The JSON shapes of the query commands' results, as QEMU's QAPI schema defines them.
enum QMPQueryShapes {
    /// BlockExportInfo.
    static func export(_ info: BlockExportInfo) -> JSONValue {
        .object([
            "id": .string(info.id),
            "type": .string(info.type),
            "node-name": .string(info.nodeName),
            "shutting-down": .bool(info.shuttingDown),
            "x-memory-bytes": .integer(info.memoryBytes),
        ])
    }

    /// BlockDeviceInfo with the members QEMU always sends; throttling is never configured.
    static func node(_ info: BlockNodeInfo) -> JSONValue {
        let shape = nodeShape(info)
        guard info.clusterSize != nil || info.backingFile != nil, case .object(var node) = shape,
              case .object(var image)? = node["image"] else { return shape }
        // An image format's extras, as QEMU's BlockDeviceInfo and ImageInfo name them.
        if let size = info.clusterSize { image["cluster-size"] = .integer(size) }
        if let backing = info.backingFile {
            node["backing_file"] = .string(backing)
            image["backing-filename"] = .string(backing)
            image["full-backing-filename"] = .string(backing)
            if let format = info.backingFormat { image["backing-filename-format"] = .string(format) }
        }
        node["backing_file_depth"] = .integer(info.backingFileDepth)
        node["image"] = .object(image)
        return .object(node)
    }

    private static func nodeShape(_ info: BlockNodeInfo) -> JSONValue {
        .object([
            "node-name": .string(info.nodeName),
            "drv": .string(info.driver),
            "file": .string(info.file),
            "ro": .bool(info.readOnly),
            "active": .bool(info.active),
            "encrypted": .bool(false),
            "detect_zeroes": .string("off"),
            "backing_file_depth": .integer(0),
            "image": .object([
                "virtual-size": .integer(info.virtualSize),
                "filename": .string(info.file),
                "format": .string(info.driver),
            ]),
            // Nodes always have a write cache; writethrough is a property of the export.
            "cache": .object([
                "writeback": .bool(true),
                "direct": .bool(info.cacheDirect),
                "no-flush": .bool(info.cacheNoFlush),
            ]),
            "write_threshold": .integer(0),
            "bps": .integer(0), "bps_rd": .integer(0), "bps_wr": .integer(0),
            "iops": .integer(0), "iops_rd": .integer(0), "iops_wr": .integer(0),
        ])
    }

    /// IOThreadInfo as QEMU shapes it, plus Spindle's placement and polling statistics.
    static func iothread(_ info: IOThreadInfo) -> JSONValue {
        var object = JSONObject([
            "id": .string(info.id),
            "thread-id": .integer(info.threadID),
            "poll-max-ns": .integer(info.pollMaxNs),
            "poll-grow": .integer(info.pollGrow),
            "poll-shrink": .integer(info.pollShrink),
            "aio-max-batch": .integer(0),
            "queues": .array(info.queues.map { .string($0) }),
            "poll-ns": .integer(info.pollCurrentNs),
            "poll-hits": .integer(info.pollHits),
            "poll-misses": .integer(info.pollMisses),
            "sleeps": .integer(info.sleeps),
            "poll-yields": .integer(info.pollYields),
        ])
        if let cpu = info.cpu { object["cpu"] = .integer(cpu) }
        if let node = info.node { object["node"] = .integer(node) }
        return .object(object)
    }
}
