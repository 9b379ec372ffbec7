/// virtio-blk numbers from the virtio 1.x specification (§5.2) and the transport feature
/// bits a vhost-user-blk device offers (§6).
public enum VirtioBlkFeature {
    // Device feature bits.
    public static let sizeMax: UInt64 = 1
    public static let segMax: UInt64 = 2
    public static let geometry: UInt64 = 4
    public static let readOnly: UInt64 = 5
    public static let blockSize: UInt64 = 6
    public static let flush: UInt64 = 9
    public static let topology: UInt64 = 10
    public static let configWCE: UInt64 = 11
    public static let multiQueue: UInt64 = 12
    public static let discard: UInt64 = 13
    public static let writeZeroes: UInt64 = 14
    public static let lifetime: UInt64 = 15
    public static let secureErase: UInt64 = 16

    // Transport (reserved) feature bits.
    public static let notifyOnEmpty: UInt64 = 24
    public static let anyLayout: UInt64 = 27
    public static let ringIndirectDescriptors: UInt64 = 28
    public static let ringEventIndex: UInt64 = 29
    public static let version1: UInt64 = 32
    public static let accessPlatform: UInt64 = 33
    public static let ringPacked: UInt64 = 34
    public static let inOrder: UInt64 = 35

    /// The mask with `bit` set.
    @inlinable
    public static func mask(_ bit: UInt64) -> UInt64 { 1 << bit }
}

/// Request types (`type` in the request header).
public enum VirtioBlkRequestType {
    public static let read: UInt32 = 0          // VIRTIO_BLK_T_IN
    public static let write: UInt32 = 1         // VIRTIO_BLK_T_OUT
    public static let flush: UInt32 = 4
    public static let getId: UInt32 = 8
    public static let getLifetime: UInt32 = 10
    public static let discard: UInt32 = 11
    public static let writeZeroes: UInt32 = 13
    public static let secureErase: UInt32 = 14
}

/// The status byte the device writes last.
public enum VirtioBlkStatus: UInt8, Sendable {
    case ok = 0
    case ioError = 1
    case unsupported = 2
}

public enum VirtioBlkLimits {
    /// virtio-blk always counts in 512-byte sectors, whatever the logical block size.
    public static let sectorSize = 512
    public static let sectorShift: UInt64 = 9
    /// Request header: type u32, reserved u32, sector u64.
    public static let headerSize = 16
    /// Discard / write-zeroes segment: sector u64, num_sectors u32, flags u32.
    public static let segmentSize = 16
    /// VIRTIO_BLK_ID_BYTES: GET_ID answers with up to 20 bytes of serial.
    public static let idBytes = 20
    /// VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, in a segment's flags.
    public static let writeZeroesFlagUnmap: UInt32 = 1
}
