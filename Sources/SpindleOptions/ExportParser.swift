import BlockCommon

/// Turns one `--export` value into `VhostUserBlkExportOptions` (no cross-option checks here).
struct ExportParser {
    static let option = "--export"
    static let keys = ["type", "id", "node-name", "addr.type", "addr.path", "writable", "writethrough",
                       "num-queues", "logical-block-size", "serial", "iothread", "iothread.*",
                       "iothread-vq-mapping", "iothread-vq-mapping.*", "fixed-iothread", "x-inflight",
                       "allow-inactive", "x-dirty-log", "packed-ring"]
    /// Spindle's limit on virtqueues per export.
    static let numQueuesRange: ClosedRange<UInt64> = 1...16
    /// qemu-storage-daemon's rule: a power of two from 512 bytes to 2 MiB.
    static let logicalBlockSizeRange: ClosedRange<UInt64> = 512...(2 << 20)
    /// virtio-blk's device ID is 20 bytes.
    static let maximumSerialLength = 20

    static func parse(_ text: String) throws(CommandLineError) -> VhostUserBlkExportOptions {
        try parse(OptionReader(option: option, text: text, impliedKey: "type"))
    }

    static func parse(_ reader: OptionReader) throws(CommandLineError) -> VhostUserBlkExportOptions {
        var reader = reader
        if let id = try? reader.string("id"), NodeName.isValid(id) { reader.subject = "id=\(id)" }
        guard let type = try reader.string("type") else {
            throw reader.missing("type", hint: "use type=vhost-user-blk")
        }
        switch type {
        case "vhost-user-blk": break
        case "nbd", "fuse", "vduse-blk":
            throw reader.error("export type '\(type)' is not supported (Spindle exports only type=vhost-user-blk)")
        default:
            throw reader.error("invalid value '\(type)' for 'type' (use vhost-user-blk)")
        }
        // Explain fd passing before the generic unknown-key check would complain about addr.str.
        if let addressType = try? reader.string("addr.type"), addressType == "fd" {
            throw reader.error("addr.type=fd is not supported (use addr.type=unix,addr.path=SOCKET)")
        }
        try reader.rejectUnknownKeys(allowed: keys, context: "type vhost-user-blk")

        let id = try reader.identifier("id", hint: "name the export, e.g. id=exp0")
        let nodeName = try reader.nodeName("node-name", hint: "the --blockdev node to export")
        guard try reader.value(at: "addr") != nil else {
            throw reader.missing("addr.path", hint: "add addr.type=unix,addr.path=SOCKET")
        }
        guard let addressType = try reader.string("addr.type") else {
            throw reader.missing("addr.type", hint: "use addr.type=unix")
        }
        guard addressType == "unix" else {
            throw reader.error("invalid value '\(addressType)' for 'addr.type' (use unix)")
        }
        let socketPath = try reader.socketPath("addr.path", hint: "the UNIX socket to listen on")

        var export = VhostUserBlkExportOptions(id: id, nodeName: nodeName, socketPath: socketPath)
        export.writable = try reader.bool("writable") ?? false
        export.writethrough = try reader.bool("writethrough") ?? false
        // TEST ONLY: off withholds INFLIGHT_SHMFD (what a frontend's rewind does after a crash).
        export.inflightTracking = try reader.bool("x-inflight") ?? true
        // QEMU 10: on, the export may use an inactive node (requests wait until activation).
        export.allowInactive = try reader.bool("allow-inactive") ?? false
        export.packedRing = try reader.bool("packed-ring") ?? true
        // TEST ONLY: unmarked offers dirty logging but marks nothing (a migration test must fail).
        switch try reader.string("x-dirty-log") {
        case nil, "marked"?: export.dirtyLogMarked = true
        case "unmarked"?: export.dirtyLogMarked = false
        case let other?: throw reader.error("invalid value '\(other)' for 'x-dirty-log' (use marked or unmarked)")
        }
        _ = try reader.bool("fixed-iothread")  // accepted for compatibility; exports never move
        if let queues = try reader.unsigned("num-queues", in: numQueuesRange) { export.numQueues = Int(queues) }
        if let blockSize = try reader.size("logical-block-size") {
            guard logicalBlockSizeRange.contains(blockSize), blockSize & (blockSize - 1) == 0 else {
                throw reader.error("invalid logical-block-size \(blockSize) (use a power of two from 512 to 2M, e.g. 512 or 4k)")
            }
            export.logicalBlockSize = UInt32(blockSize)
        }
        if let serial = try reader.string("serial") {
            guard serial.utf8.count <= maximumSerialLength else {
                throw reader.error("serial '\(serial)' is too long (\(serial.utf8.count) bytes; virtio-blk allows at most \(maximumSerialLength))")
            }
            export.serial = serial.isEmpty ? nil : serial
        }
        try IOThreadMappingParser.parse(reader, into: &export)
        return export
    }
}
