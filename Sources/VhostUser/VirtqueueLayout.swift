/// Split virtqueue memory layout (virtio 1.x §2.7), all fields little-endian.
///
///     descriptor: addr u64 @0, len u32 @8, flags u16 @12, next u16 @14      (16 bytes)
///     avail:      flags u16 @0, idx u16 @2, ring[size] u16 @4, used_event u16 @4+2*size
///     used:       flags u16 @0, idx u16 @2, ring[size] {id u32, len u32} @4, avail_event u16 @4+8*size
public enum VirtqueueLayout {
    public static let maximumSize = 32768
    public static let descriptorSize = 16
    public static let descriptorAlignment = 16
    public static let availableAlignment = 2
    public static let usedAlignment = 4

    /// VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT.
    public static let descriptorFlagNext: UInt16 = 1
    public static let descriptorFlagWrite: UInt16 = 2
    public static let descriptorFlagIndirect: UInt16 = 4
    /// VIRTQ_AVAIL_F_NO_INTERRUPT: the driver asks not to be interrupted (no EVENT_IDX).
    public static let availableFlagNoInterrupt: UInt16 = 1
    /// VIRTQ_USED_F_NO_NOTIFY: the device asks not to be kicked (no EVENT_IDX).
    public static let usedFlagNoNotify: UInt16 = 1

    /// Most entries accepted in one indirect table (next indices are u16 anyway).
    public static let maximumIndirectDescriptors = 32768

    public static func descriptorTableBytes(size: Int) -> Int { descriptorSize * size }
    public static func availableRingBytes(size: Int) -> Int { 6 + 2 * size }
    public static func usedRingBytes(size: Int) -> Int { 6 + 8 * size }

    public static func isValidSize(_ size: UInt32) -> Bool {
        size >= 1 && size <= UInt32(maximumSize) && size & (size - 1) == 0
    }
}
