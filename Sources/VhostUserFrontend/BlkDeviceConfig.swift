/// The virtio-blk config space fields the frontend uses (virtio 1.x §5.2.4), read with
/// GET_CONFIG.
public struct BlkDeviceConfig: Sendable, Hashable {
    /// Bytes GET_CONFIG asks for: everything up to and including write_zeroes_may_unmap and
    /// its padding. Older backends (qsd 7.2) refuse windows larger than their struct.
    public static let requestSize = 60

    /// Disk size in 512-byte sectors.
    public var capacitySectors: UInt64
    /// Logical block size in bytes (meaningful with VIRTIO_BLK_F_BLK_SIZE).
    public var blockSize: UInt32
    /// Queues the device has (meaningful with VIRTIO_BLK_F_MQ).
    public var numQueues: UInt16
    /// Largest segment and segment count (SIZE_MAX / SEG_MAX).
    public var sizeMax: UInt32
    public var segMax: UInt32

    public var capacityBytes: UInt64 { capacitySectors &* 512 }

    /// Parses the config bytes from offset 0; nil if fewer than 36 bytes came.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= 36 else { return nil }
        func read(_ offset: Int, _ count: Int) -> UInt64 {
            var value: UInt64 = 0
            for i in 0..<count { value |= UInt64(bytes[offset + i]) << UInt64(8 * i) }
            return value
        }
        capacitySectors = read(0, 8)
        sizeMax = UInt32(read(8, 4))
        segMax = UInt32(read(12, 4))
        blockSize = UInt32(read(20, 4))
        numQueues = UInt16(read(34, 2))
    }
}
