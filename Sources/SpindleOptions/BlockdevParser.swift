import BlockCommon

/// Turns one `--blockdev` value into `BlockdevOptions` (no cross-option checks here).
struct BlockdevParser {
    static let option = "--blockdev"
    static let drivers = ["file", "null-co", "rbd"]
    // Listed in error messages in this order: the most useful keys first.
    static let fileKeys = ["filename", "node-name", "cache.direct", "cache.no-flush", "aio", "read-only",
                           "locking", "discard", "driver"] + commonKeys
    static let nullKeys = ["node-name", "size", "read-zeroes", "read-only", "driver"] + commonKeys
    /// Generic block-layer keys management tools (libvirt) send with every blockdev.
    static let commonKeys = ["auto-read-only", "force-share", "detect-zeroes", "active"]

    static let nodeNameHint = "every --blockdev needs a name that --export node-name= can refer to"

    struct Result {
        var blockdev: BlockdevOptions
        var notes: [String] = []
    }

    static func parse(_ text: String) throws(CommandLineError) -> Result {
        try parse(OptionReader(option: option, text: text, impliedKey: "driver"))
    }

    static func parse(_ reader: OptionReader) throws(CommandLineError) -> Result {
        var result = try parseDriver(reader)
        // active=off (QEMU 10): open without taking permissions or image locks.
        result.blockdev.active = try reader.bool("active") ?? true
        return result
    }

    private static func parseDriver(_ reader: OptionReader) throws(CommandLineError) -> Result {
        var reader = reader
        if let name = try? reader.string("node-name"), NodeName.isValid(name) { reader.subject = "node-name=\(name)" }
        guard let driver = try reader.string("driver") else {
            throw reader.missing("driver", hint: "use driver=file or driver=null-co")
        }
        switch driver {
        case "file":
            try reader.rejectUnknownKeys(allowed: fileKeys, context: "driver file")
            return try parseFile(reader)
        case "null-co":
            try reader.rejectUnknownKeys(allowed: nullKeys, context: "driver null-co")
            return try parseNull(reader)
        case "rbd":
            return Result(blockdev: try RbdParser.parse(reader, nodeNameHint: nodeNameHint))
        case "x-delay":
            return Result(blockdev: try DelayFilterParser.parse(reader, nodeNameHint: nodeNameHint))
        default:
            throw reader.error("unsupported driver '\(driver)' (Spindle supports \(OptionReader.orList(drivers)), and x-delay for tests)")
        }
    }

    private static func parseFile(_ reader: OptionReader) throws(CommandLineError) -> Result {
        let nodeName = try reader.nodeName("node-name", hint: nodeNameHint)
        let filename = try reader.requiredString("filename", hint: "the image file or block device to open")
        guard !filename.isEmpty else { throw reader.error("'filename' must not be empty") }
        var file = FileOptions(filename: filename)
        var notes: [String] = []
        if let aio = try reader.choice("aio", ["io_uring", "threads", "native"]), aio != "io_uring" {
            notes.append("--blockdev node-name=\(nodeName): aio=\(aio) ignored; Spindle always uses io_uring")
        }
        file.direct = try reader.bool("cache.direct") ?? false
        file.noFlush = try reader.bool("cache.no-flush") ?? false
        file.readOnly = try reader.bool("read-only") ?? false
        // auto: lock when the host supports OFD locks, which Linux always does.
        file.locking = try reader.choice("locking", ["on", "off", "auto"]).map { $0 != "off" } ?? true
        // QEMU's default is discard=ignore.
        file.discardUnmap = try reader.choice("discard", ["unmap", "ignore"]) == "unmap"
        let common = try parseCommonKeys(reader, readOnly: file.readOnly)
        file.autoReadOnly = common.autoReadOnly
        if common.forceShare { file.locking = false }
        return Result(blockdev: BlockdevOptions(nodeName: nodeName, driver: .file(file)), notes: notes)
    }

    /// auto-read-only (open read-only when writing is not allowed), force-share (take no
    /// locks; QEMU allows it only read-only), detect-zeroes (only off: Spindle does not scan
    /// written data).
    private static func parseCommonKeys(_ reader: OptionReader, readOnly: Bool) throws(CommandLineError) -> (autoReadOnly: Bool, forceShare: Bool) {
        let autoReadOnly = try reader.bool("auto-read-only") ?? false
        let forceShare = try reader.bool("force-share") ?? false
        if forceShare && !readOnly {
            throw reader.error("force-share=on requires read-only=on")
        }
        if let detect = try reader.choice("detect-zeroes", ["off", "on", "unmap"]), detect != "off" {
            throw reader.error("detect-zeroes=\(detect) is not supported (Spindle does not scan written data; use detect-zeroes=off)")
        }
        return (autoReadOnly, forceShare)
    }

    private static func parseNull(_ reader: OptionReader) throws(CommandLineError) -> Result {
        let nodeName = try reader.nodeName("node-name", hint: nodeNameHint)
        var null = NullOptions()
        if let size = try reader.size("size") { null.size = size }
        null.readZeroes = try reader.bool("read-zeroes") ?? false
        null.readOnly = try reader.bool("read-only") ?? false
        _ = try parseCommonKeys(reader, readOnly: null.readOnly)  // null-co has no file to lock
        return Result(blockdev: BlockdevOptions(nodeName: nodeName, driver: .null(null)))
    }
}
