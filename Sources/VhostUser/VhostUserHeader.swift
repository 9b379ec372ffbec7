/// The 12-byte header every vhost-user message starts with: request, flags, payload size,
/// each a 32-bit integer. vhost-user.rst says "machine native byte order"; Spindle only
/// runs on little-endian hosts (x86-64, aarch64), where that is little-endian.
public struct VhostUserHeader: Sendable, Hashable {
    public static let size = 12

    /// A `VhostUserRequestCode` (front-end → back-end) or `VhostUserBackendRequestCode`
    /// (back-end channel); kept raw so unknown codes survive framing.
    public var request: UInt32
    public var flags: VhostUserHeaderFlags
    /// Size of the payload that follows, in bytes.
    public var size: UInt32

    public init(request: UInt32, flags: VhostUserHeaderFlags, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    /// Decodes the first 12 bytes of `bytes`; nil if there are fewer.
    public init?(bytes: some Collection<UInt8>) {
        var reader = VhostUserByteReader(bytes)
        guard let request = reader.readUInt32(),
              let flags = reader.readUInt32(),
              let size = reader.readUInt32() else { return nil }
        self.init(request: request, flags: VhostUserHeaderFlags(rawValue: flags), size: size)
    }

    /// Appends the 12 header bytes.
    public func encode(into writer: inout VhostUserByteWriter) {
        writer.append(request)
        writer.append(flags.rawValue)
        writer.append(size)
    }

    public var encoded: [UInt8] {
        var writer = VhostUserByteWriter(capacity: Self.size)
        encode(into: &writer)
        return writer.bytes
    }
}

/// The header's flags word: protocol version in the low two bits, then REPLY and
/// NEED_REPLY.
public struct VhostUserHeaderFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Mask of the version field (bits 0-1).
    public static let versionMask: UInt32 = 0x3
    /// The only protocol version there is.
    public static let currentVersion: UInt32 = 0x1

    /// Version 1 in the version field; set on every message Spindle sends.
    public static let version1 = VhostUserHeaderFlags(rawValue: 0x1)
    /// Set on replies (bit 2).
    public static let reply = VhostUserHeaderFlags(rawValue: 0x4)
    /// The sender wants a REPLY_ACK reply (bit 3); only meaningful once
    /// `VhostUserProtocolFeatures.replyAck` was negotiated.
    public static let needReply = VhostUserHeaderFlags(rawValue: 0x8)

    public var version: UInt32 { rawValue & Self.versionMask }
}
