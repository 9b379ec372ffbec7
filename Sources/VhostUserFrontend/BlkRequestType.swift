/// virtio-blk request types the frontend sends (`type` in the request header).
public enum BlkRequestType: UInt32, Sendable {
    case read = 0     // VIRTIO_BLK_T_IN
    case write = 1    // VIRTIO_BLK_T_OUT
    case flush = 4    // VIRTIO_BLK_T_FLUSH
    case getID = 8    // VIRTIO_BLK_T_GET_ID
    /// Discard / write-zeroes: the data is the 16-byte segments (sector, sector count, flags).
    case discard = 11  // VIRTIO_BLK_T_DISCARD
    case writeZeroes = 13  // VIRTIO_BLK_T_WRITE_ZEROES

    /// Whether the device writes the data buffer (the data descriptor is device-writable).
    @inlinable
    public var deviceWritesData: Bool { self == .read || self == .getID }
}

/// The status byte the device writes last; the frontend stores `pending` before submitting
/// so a request the device completes without a status is caught.
public enum BlkStatus {
    public static let ok: UInt8 = 0
    public static let ioError: UInt8 = 1
    public static let unsupported: UInt8 = 2
    public static let pending: UInt8 = 0xFF
}
