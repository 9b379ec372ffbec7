/// What a CQE's user_data says: which completion handler of the IOThread (high 32 bits: its
/// HandlerID, slot and generation) and that handler's own tag (low 32 bits, e.g. a request
/// slot index, or a flag bit of the handler's own for its kick poll).
public struct CompletionToken: Sendable, Equatable {
    /// The largest tag a handler may use.
    public static let maxTag: UInt64 = 0xFFFF_FFFF

    public let rawValue: UInt64
    @inline(__always) public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inline(__always) public init(handler: HandlerID, tag: UInt64) {
        assert(tag <= Self.maxTag, "a completion tag has 32 bits: \(tag) does not fit")
        rawValue = UInt64(handler.rawValue) << 32 | (tag & Self.maxTag)
    }
    @inline(__always) public var handler: HandlerID { HandlerID(rawValue: UInt32(truncatingIfNeeded: rawValue >> 32)) }
    @inline(__always) public var tag: UInt64 { rawValue & Self.maxTag }
}
