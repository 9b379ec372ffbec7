/// SET_VRING_BASE / GET_VRING_BASE's 32-bit value for a packed ring: the next avail
/// position and the driver-side wrap counter in the low 16 bits (bit 15 = wrap), the next
/// used position and the device's wrap counter in the high 16 bits. QEMU 7.2 reads it so
/// in virtio_queue_packed_set_last_avail_idx.
public struct PackedVringBase: Sendable, Hashable, CustomStringConvertible {
    /// Ring position (0..<size) where the device looks for the next available descriptor.
    public var availablePosition: UInt16
    public var availableWrap: Bool
    /// Ring position where the device writes its next used descriptor.
    public var usedPosition: UInt16
    public var usedWrap: Bool

    /// A fresh ring: both positions 0, both wrap counters 1 (as the spec starts them).
    public static let initial = PackedVringBase(availablePosition: 0, availableWrap: true, usedPosition: 0, usedWrap: true)

    public init(availablePosition: UInt16, availableWrap: Bool, usedPosition: UInt16, usedWrap: Bool) {
        self.availablePosition = availablePosition
        self.availableWrap = availableWrap
        self.usedPosition = usedPosition
        self.usedWrap = usedWrap
    }

    /// Decodes the message value. Positions are not checked here (the ring does that against
    /// its size).
    public init(encoded value: UInt32) {
        availablePosition = UInt16(truncatingIfNeeded: value) & 0x7fff
        availableWrap = value & 0x8000 != 0
        usedPosition = UInt16(truncatingIfNeeded: value >> 16) & 0x7fff
        usedWrap = value & 0x8000_0000 != 0
    }

    public var encoded: UInt32 {
        UInt32(Self.half(availablePosition, availableWrap)) | UInt32(Self.half(usedPosition, usedWrap)) << 16
    }

    /// One 16-bit half: position, wrap counter in bit 15.
    public static func half(_ position: UInt16, _ wrap: Bool) -> UInt16 {
        position & 0x7fff | (wrap ? 0x8000 : 0)
    }

    public var description: String {
        "avail \(availablePosition) wrap \(availableWrap ? 1 : 0), used \(usedPosition) wrap \(usedWrap ? 1 : 0)"
    }
}
