/// The virtio-blk configuration space (virtio 1.x §5.2.4), as GET_CONFIG / SET_CONFIG see it.
///
/// Serialized little-endian with the spec's offsets. Fields past `writeZeroesMayUnmap`
/// (secure erase, zoned) are kept at zero unless set; reads past the end of the layout
/// read as zero, up to the largest config vhost-user can carry.
public struct VirtioBlkConfig: Sendable, Hashable {
    public struct Geometry: Sendable, Hashable {
        public var cylinders: UInt16 = 0
        public var heads: UInt8 = 0
        public var sectors: UInt8 = 0
        public init(cylinders: UInt16 = 0, heads: UInt8 = 0, sectors: UInt8 = 0) {
            self.cylinders = cylinders
            self.heads = heads
            self.sectors = sectors
        }
    }

    public struct Topology: Sendable, Hashable {
        /// log2(physical block size / logical block size).
        public var physicalBlockExponent: UInt8 = 0
        /// Offset of the first aligned logical block, in logical blocks.
        public var alignmentOffset: UInt8 = 0
        /// Suggested minimum / optimal I/O sizes, in logical blocks.
        public var minIOSize: UInt16 = 0
        public var optIOSize: UInt32 = 0
        public init(physicalBlockExponent: UInt8 = 0, alignmentOffset: UInt8 = 0, minIOSize: UInt16 = 0, optIOSize: UInt32 = 0) {
            self.physicalBlockExponent = physicalBlockExponent
            self.alignmentOffset = alignmentOffset
            self.minIOSize = minIOSize
            self.optIOSize = optIOSize
        }
    }

    /// Disk size in 512-byte sectors.
    public var capacity: UInt64 = 0
    public var sizeMax: UInt32 = 0
    public var segMax: UInt32 = 0
    public var geometry = Geometry()
    /// Logical block size in bytes.
    public var blockSize: UInt32 = 512
    public var topology = Topology()
    /// 1 = writeback cache, 0 = writethrough; writable by the driver with CONFIG_WCE.
    public var writeback: UInt8 = 0
    public var numQueues: UInt16 = 1
    public var maxDiscardSectors: UInt32 = 0
    public var maxDiscardSegments: UInt32 = 0
    public var discardSectorAlignment: UInt32 = 0
    public var maxWriteZeroesSectors: UInt32 = 0
    public var maxWriteZeroesSegments: UInt32 = 0
    public var writeZeroesMayUnmap: UInt8 = 0
    public var maxSecureEraseSectors: UInt32 = 0
    public var maxSecureEraseSegments: UInt32 = 0
    public var secureEraseSectorAlignment: UInt32 = 0

    /// Bytes of the layout this type knows (through the zoned fields, kept zero).
    public static let layoutSize = 96
    /// VHOST_USER_MAX_CONFIG_SIZE: the most a GET_CONFIG / SET_CONFIG can cover.
    public static let maximumAccessSize = 256

    /// Field offsets, for tests and SET_CONFIG handling.
    public enum Offset {
        public static let capacity = 0
        public static let sizeMax = 8
        public static let segMax = 12
        public static let geometry = 16
        public static let blockSize = 20
        public static let topology = 24
        public static let writeback = 32
        public static let numQueues = 34
        public static let maxDiscardSectors = 36
        public static let maxDiscardSegments = 40
        public static let discardSectorAlignment = 44
        public static let maxWriteZeroesSectors = 48
        public static let maxWriteZeroesSegments = 52
        public static let writeZeroesMayUnmap = 56
        public static let maxSecureEraseSectors = 60
        public static let maxSecureEraseSegments = 64
        public static let secureEraseSectorAlignment = 68
    }

    public init() {}

    /// The whole layout, little-endian.
    public func bytes() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.layoutSize)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { raw in
                for (i, byte) in raw.enumerated() { out[offset + i] = byte }
            }
        }
        put(capacity, at: Offset.capacity)
        put(sizeMax, at: Offset.sizeMax)
        put(segMax, at: Offset.segMax)
        put(geometry.cylinders, at: Offset.geometry)
        put(geometry.heads, at: Offset.geometry + 2)
        put(geometry.sectors, at: Offset.geometry + 3)
        put(blockSize, at: Offset.blockSize)
        put(topology.physicalBlockExponent, at: Offset.topology)
        put(topology.alignmentOffset, at: Offset.topology + 1)
        put(topology.minIOSize, at: Offset.topology + 2)
        put(topology.optIOSize, at: Offset.topology + 4)
        put(writeback, at: Offset.writeback)
        put(numQueues, at: Offset.numQueues)
        put(maxDiscardSectors, at: Offset.maxDiscardSectors)
        put(maxDiscardSegments, at: Offset.maxDiscardSegments)
        put(discardSectorAlignment, at: Offset.discardSectorAlignment)
        put(maxWriteZeroesSectors, at: Offset.maxWriteZeroesSectors)
        put(maxWriteZeroesSegments, at: Offset.maxWriteZeroesSegments)
        put(writeZeroesMayUnmap, at: Offset.writeZeroesMayUnmap)
        put(maxSecureEraseSectors, at: Offset.maxSecureEraseSectors)
        put(maxSecureEraseSegments, at: Offset.maxSecureEraseSegments)
        put(secureEraseSectorAlignment, at: Offset.secureEraseSectorAlignment)
        return out
    }

    /// `size` bytes at `offset` (GET_CONFIG), or nil if the range goes past the largest
    /// config vhost-user can carry. Bytes past the known layout read as zero.
    public func read(offset: UInt32, size: UInt32) -> [UInt8]? {
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow, end <= UInt32(Self.maximumAccessSize) else { return nil }
        let layout = bytes()
        return (Int(offset)..<Int(end)).map { $0 < layout.count ? layout[$0] : 0 }
    }

    /// Applies a driver write (SET_CONFIG). Only `writeback` is writable, and only with
    /// VIRTIO_BLK_F_CONFIG_WCE; other bytes in the range must keep their current value.
    public mutating func applyWrite(offset: UInt32, bytes newBytes: [UInt8], configWCENegotiated: Bool) throws(VirtioBlkConfigWriteError) {
        let (end, overflow) = offset.addingReportingOverflow(UInt32(truncatingIfNeeded: newBytes.count))
        guard !overflow, newBytes.count <= Self.maximumAccessSize, end <= UInt32(Self.maximumAccessSize) else {
            throw .outOfRange(offset: offset, size: newBytes.count)
        }
        let current = bytes()
        var newWriteback: UInt8?
        for (i, byte) in newBytes.enumerated() {
            let position = Int(offset) + i
            let old: UInt8 = position < current.count ? current[position] : 0
            if position == Offset.writeback {
                newWriteback = byte
            } else if byte != old {
                throw .readOnlyField(offset: position)
            }
        }
        guard let newWriteback else { return }
        guard configWCENegotiated else { throw .writebackNotNegotiated }
        guard newWriteback <= 1 else { throw .invalidWriteback(newWriteback) }
        writeback = newWriteback
    }
}

/// A SET_CONFIG the device refuses.
public enum VirtioBlkConfigWriteError: Error, Sendable, Equatable, CustomStringConvertible {
    case outOfRange(offset: UInt32, size: Int)
    case readOnlyField(offset: Int)
    case writebackNotNegotiated
    case invalidWriteback(UInt8)

    public var description: String {
        switch self {
        case .outOfRange(let offset, let size):
            return "virtio-blk config write of \(size) bytes at offset \(offset) is out of range"
        case .readOnlyField(let offset):
            return "virtio-blk config byte \(offset) is read-only"
        case .writebackNotNegotiated:
            return "virtio-blk writeback changed without VIRTIO_BLK_F_CONFIG_WCE"
        case .invalidWriteback(let value):
            return "virtio-blk writeback value \(value) is neither 0 nor 1"
        }
    }
}
