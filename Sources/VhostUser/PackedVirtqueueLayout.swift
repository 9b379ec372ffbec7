/// Packed virtqueue memory layout (virtio 1.1+ "Packed Virtqueues"), all fields little-endian.
///
///     descriptor ring:   size × { addr u64 @0, len u32 @8, id u16 @12, flags u16 @14 }   (16 bytes each)
///     driver area:       driver event suppression { off_wrap u16 @0, flags u16 @2 } (the device reads it)
///     device area:       device event suppression { off_wrap u16 @0, flags u16 @2 } (the device writes it)
///
/// Any size from 1 to 32768 is allowed (not only powers of two).
public enum PackedVirtqueueLayout {
    public static let maximumSize = 32768
    /// VIRTIO_F_RING_PACKED (bit 34) in the virtio feature word.
    public static let featureMask: UInt64 = 1 << 34
    public static let descriptorSize = 16
    public static let descriptorAlignment = 16
    public static let eventSuppressionBytes = 4
    public static let eventSuppressionAlignment = 4

    /// VIRTQ_DESC_F_AVAIL and VIRTQ_DESC_F_USED: an available descriptor has AVAIL equal to
    /// the driver's wrap counter and USED its inverse; a used one has both equal to the
    /// device's wrap counter.
    public static let descriptorFlagAvailable: UInt16 = 1 << 7
    public static let descriptorFlagUsed: UInt16 = 1 << 15

    /// RING_EVENT_FLAGS_ENABLE / DISABLE / DESC (DESC only with VIRTIO_F_RING_EVENT_IDX).
    public static let eventFlagsEnable: UInt16 = 0
    public static let eventFlagsDisable: UInt16 = 1
    public static let eventFlagsDescriptor: UInt16 = 2
    /// Bit 15 of off_wrap is the wrap counter, bits 0-14 the ring offset.
    public static let eventWrapBit: UInt16 = 1 << 15

    public static func descriptorRingBytes(size: Int) -> Int { descriptorSize * size }

    public static func isValidSize(_ size: UInt32) -> Bool {
        size >= 1 && size <= UInt32(maximumSize)
    }

    /// The AVAIL and USED bits of a descriptor made available under `wrap`.
    @inlinable
    public static func availableFlags(wrap: Bool) -> UInt16 {
        wrap ? descriptorFlagAvailable : descriptorFlagUsed
    }

    /// The AVAIL and USED bits of a descriptor used under `wrap`.
    @inlinable
    public static func usedFlags(wrap: Bool) -> UInt16 {
        wrap ? descriptorFlagAvailable | descriptorFlagUsed : 0
    }
}
