/// What a user of a node (a BlockBackend) needs from it, QEMU's BLK_PERM_* in short.
public struct BlockPermissions: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let consistentRead = BlockPermissions(rawValue: 1 << 0)
    public static let write = BlockPermissions(rawValue: 1 << 1)
    public static let resize = BlockPermissions(rawValue: 1 << 2)

    public var description: String {
        var parts: [String] = []
        if contains(.consistentRead) { parts.append("consistent-read") }
        if contains(.write) { parts.append("write") }
        if contains(.resize) { parts.append("resize") }
        return parts.isEmpty ? "none" : parts.joined(separator: ",")
    }
}
