import BlockCommon
import Glibc

/// The keys of `driver=x-delay` (TEST ONLY): the filter's child by node name and when it
/// holds or fails requests. The child must be a node defined before it.
enum DelayFilterParser {
    /// The errnos fail-errno= takes, by name (QEMU's blkdebug takes a number).
    static let errnos: [(name: String, value: Int32)] = [
        ("EIO", EIO), ("ENOSPC", ENOSPC), ("EINVAL", EINVAL), ("ENOMEM", ENOMEM), ("EROFS", EROFS),
        ("EPERM", EPERM), ("EACCES", EACCES), ("ETIMEDOUT", ETIMEDOUT), ("ENOTSUP", ENOTSUP), ("EDQUOT", EDQUOT),
    ]
    /// A held completion waits at most this long: longer would look like a hang.
    static let holdMillisecondsRange: ClosedRange<UInt64> = 0...600_000

    static let keys = ["node-name", "file", "hold-every", "hold-ms", "fail-every", "fail-errno", "driver", "active"]

    static func parse(_ reader: OptionReader, nodeNameHint: String) throws(CommandLineError) -> BlockdevOptions {
        // Before the unknown-key check, which would only complain about file.driver.
        if case .object = try reader.value(at: "file") {
            throw reader.error("'file' must name an existing node (e.g. file=disk0), not describe a new one")
        }
        try reader.rejectUnknownKeys(allowed: keys, context: "driver x-delay")
        let nodeName = try reader.nodeName("node-name", hint: nodeNameHint)
        let child = try reader.nodeName("file", hint: "the node-name of the node to filter, defined before this one")
        guard child != nodeName else { throw reader.error("an x-delay node cannot filter itself (file=\(child))") }
        var delay = DelayFilterOptions(child: child)
        delay.holdEvery = try reader.unsigned("hold-every") ?? 0
        delay.holdMilliseconds = try reader.unsigned("hold-ms", in: holdMillisecondsRange) ?? delay.holdMilliseconds
        delay.failEvery = try reader.unsigned("fail-every") ?? 0
        if let name = try reader.choice("fail-errno", errnos.map(\.name)) {
            delay.failErrno = errnos.first { $0.name == name }!.value
        }
        return BlockdevOptions(nodeName: nodeName, driver: .delay(delay))
    }
}
