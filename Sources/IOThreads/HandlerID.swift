/// Names a completion handler registered on an IOThread: its slot in the thread's handler
/// table and that slot's generation. A slot is given out again after an unregister, its
/// generation is not: a CQE that arrives late for the old handler (an I/O or a poll it had
/// in flight) carries the old generation and is dropped, never delivered to the new one.
/// 16 bits of generation: a late CQE would have to outlive 65,536 reuses of its slot.
public struct HandlerID: Sendable, Equatable, CustomStringConvertible {
    public let index: UInt16
    public let generation: UInt16

    @inline(__always) public init(index: UInt16, generation: UInt16) {
        self.index = index
        self.generation = generation
    }

    @inline(__always) init(rawValue: UInt32) {
        index = UInt16(truncatingIfNeeded: rawValue >> 16)
        generation = UInt16(truncatingIfNeeded: rawValue)
    }

    @inline(__always) var rawValue: UInt32 { UInt32(index) << 16 | UInt32(generation) }

    public var description: String { "handler \(index)/\(generation)" }
}
