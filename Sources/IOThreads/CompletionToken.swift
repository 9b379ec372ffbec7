/// What a CQE's user_data says: which completion handler of the IOThread (high 16 bits)
/// and that handler's own tag (low 48 bits, e.g. a request slot index).
public struct CompletionToken: Sendable, Equatable {
    public let rawValue: UInt64
    @inline(__always) public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inline(__always) public init(handler: UInt16, tag: UInt64) {
        rawValue = UInt64(handler) << 48 | (tag & 0xFFFF_FFFF_FFFF)
    }
    @inline(__always) public var handler: UInt16 { UInt16(truncatingIfNeeded: rawValue >> 48) }
    @inline(__always) public var tag: UInt64 { rawValue & 0xFFFF_FFFF_FFFF }
}
