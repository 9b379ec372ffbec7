// Bounds-checked reading and appending of the fixed-width integers vhost-user payloads are
// made of. Multi-byte values are little-endian (the host order on every platform Spindle
// supports; see VhostUserHeader).

/// Reads integers from the front of a byte collection; every read returns nil instead of
/// reading past the end.
public struct VhostUserByteReader {
    private let bytes: [UInt8]
    public private(set) var offset: Int = 0

    public init(_ bytes: some Collection<UInt8>) {
        self.bytes = Array(bytes)
    }

    public var remaining: Int { bytes.count - offset }

    public mutating func readUInt8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func readUInt16() -> UInt16? {
        readInteger(byteCount: 2).map { UInt16(truncatingIfNeeded: $0) }
    }

    public mutating func readUInt32() -> UInt32? {
        readInteger(byteCount: 4).map { UInt32(truncatingIfNeeded: $0) }
    }

    public mutating func readUInt64() -> UInt64? {
        readInteger(byteCount: 8)
    }

    /// Reads `count` raw bytes.
    public mutating func readBytes(_ count: Int) -> [UInt8]? {
        guard count >= 0, remaining >= count else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    /// Skips `count` bytes (padding).
    public mutating func skip(_ count: Int) -> Bool {
        guard count >= 0, remaining >= count else { return false }
        offset += count
        return true
    }

    private mutating func readInteger(byteCount: Int) -> UInt64? {
        guard remaining >= byteCount else { return nil }
        var value: UInt64 = 0
        for i in 0..<byteCount {
            value |= UInt64(bytes[offset + i]) << UInt64(8 * i)
        }
        offset += byteCount
        return value
    }
}

/// Appends integers to a growing byte array.
public struct VhostUserByteWriter {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func append(_ value: UInt8) {
        bytes.append(value)
    }

    public mutating func append(_ value: UInt16) {
        appendInteger(UInt64(value), byteCount: 2)
    }

    public mutating func append(_ value: UInt32) {
        appendInteger(UInt64(value), byteCount: 4)
    }

    public mutating func append(_ value: UInt64) {
        appendInteger(value, byteCount: 8)
    }

    public mutating func append(contentsOf other: some Sequence<UInt8>) {
        bytes.append(contentsOf: other)
    }

    /// Appends `count` zero bytes.
    public mutating func appendZeros(_ count: Int) {
        guard count > 0 else { return }
        bytes.append(contentsOf: repeatElement(0, count: count))
    }

    private mutating func appendInteger(_ value: UInt64, byteCount: Int) {
        for i in 0..<byteCount {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(8 * i)))
        }
    }
}
