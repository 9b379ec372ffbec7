import BlockCommon

/// The keys of `driver=qcow2`: the image's `file` (a node name, or an inline file object as
/// in QEMU's JSON form), `backing` (a node name or null; absent: the image's own header),
/// `l2-cache-size` and `read-only`.
enum Qcow2Parser {
    static let keys = ["node-name", "file", "backing", "l2-cache-size", "read-only", "driver", "active",
                       "auto-read-only", "force-share", "detect-zeroes"]
    static let inlineFileKeys = ["driver", "filename", "read-only", "locking", "aio", "cache.direct", "cache.no-flush"]
    /// QEMU refuses L2 caches larger than this too (INT_MAX bytes, in practice).
    static let l2CacheSizeRange: ClosedRange<UInt64> = 0...(1 << 31 - 1)

    static func parse(_ reader: OptionReader, nodeNameHint: String) throws(CommandLineError) -> BlockdevOptions {
        let fileValue = try reader.value(at: "file")
        var allowed = keys
        if case .object = fileValue { allowed += inlineFileKeys.map { "file." + $0 } }
        try reader.rejectUnknownKeys(allowed: allowed, context: "driver qcow2")
        let nodeName = try reader.nodeName("node-name", hint: nodeNameHint)
        // auto-read-only=on: writing is not possible yet, so that means read-only (as QEMU
        // falls back when it cannot write).
        let autoReadOnly = try reader.bool("auto-read-only") ?? false
        let readOnly = try reader.bool("read-only") ?? autoReadOnly
        var qcow2 = Qcow2Options(file: try parseFile(reader, fileValue, readOnly: readOnly))
        qcow2.readOnly = readOnly
        if case .node(let child) = qcow2.file, child == nodeName {
            throw reader.error("a qcow2 node cannot be its own file (file=\(child))")
        }
        switch try reader.value(at: "backing") {
        case nil: qcow2.backing = .fromHeader
        case .null?: qcow2.backing = .none
        case .string(let text)? where text == "null" && reader.isFromKeyval: qcow2.backing = .none
        case .string?:
            let backing = try reader.nodeName("backing", hint: "the node-name of the backing node, defined before this one, or null")
            guard backing != nodeName else { throw reader.error("a qcow2 node cannot be its own backing node (backing=\(backing))") }
            qcow2.backing = .node(backing)
        case .object?:
            throw reader.error("'backing' must name an existing node (or be null); describing a new node inline is not supported")
        case let other?:
            throw reader.error("'backing' must be a node name or null, not \(other.typeName)")
        }
        qcow2.l2CacheSize = try reader.size("l2-cache-size")
        if let size = qcow2.l2CacheSize, !l2CacheSizeRange.contains(size) {
            throw reader.error("'l2-cache-size' must be at most \(l2CacheSizeRange.upperBound) bytes, not \(size)")
        }
        if try reader.bool("force-share") == true && !readOnly { throw reader.error("force-share=on requires read-only=on") }
        if let detect = try reader.choice("detect-zeroes", ["off", "on", "unmap"]), detect != "off" {
            throw reader.error("detect-zeroes=\(detect) is not supported (Spindle does not scan written data; use detect-zeroes=off)")
        }
        return BlockdevOptions(nodeName: nodeName, driver: .qcow2(qcow2))
    }

    private static func parseFile(_ reader: OptionReader, _ value: OptionValue?, readOnly: Bool) throws(CommandLineError) -> Qcow2Options.File {
        switch value {
        case nil:
            throw reader.missing("file", hint: "the node-name of the image's file node, or a file object")
        case .string?:
            return .node(try reader.nodeName("file", hint: "the node-name of the image's file node, defined before this one"))
        case .object?:
            guard try reader.string("file.driver") == "file" else {
                throw reader.error("the inline 'file' must have \"driver\": \"file\" (the only protocol driver under qcow2)")
            }
            guard let filename = try reader.nonEmptyString("file.filename") else {
                throw reader.missing("file.filename", hint: "the qcow2 image's path")
            }
            var file = FileOptions(filename: filename)
            file.readOnly = try reader.bool("file.read-only") ?? readOnly
            file.locking = try reader.choice("file.locking", ["on", "off", "auto"]).map { $0 != "off" } ?? true
            _ = try reader.choice("file.aio", ["io_uring", "threads", "native"])
            file.direct = try reader.bool("file.cache.direct") ?? false
            file.noFlush = try reader.bool("file.cache.no-flush") ?? false
            if try reader.bool("force-share") == true { file.locking = false }
            return .inline(file)
        case let other?:
            throw reader.error("'file' must be a node name or a file object, not \(other.typeName)")
        }
    }
}
