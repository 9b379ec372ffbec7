import BlockIO
import Synchronization

/// What every queue of one virtio-blk device shares: its BlockBackend, its identity and
/// limits, and the two things that change at run time (capacity on resize, the write-cache
/// mode the guest may toggle), kept in atomics so IOThreads read them without locks.
public final class VirtioBlkDevice: @unchecked Sendable {
    public let exportID: String
    public let backend: BlockBackend
    public let readOnly: Bool
    public let logicalBlockSize: UInt32
    public let numQueues: UInt16
    /// GET_ID answer: up to 20 bytes.
    public let serial: [UInt8]
    private let writeCache: Atomic<Bool>
    /// Request statistics, one counter block per queue (they outlive the queues).
    public let stats: BlockStatsTable

    /// Requests in flight per queue (also the number of preallocated slots).
    public static let maxSlotsPerQueue = 256
    /// Largest descriptor chain (in host spans) a request may have: seg_max data segments
    /// plus header and status, with room for buffers crossing memory regions.
    public static let maxSpansPerRequest = 512
    /// Advertised limits (config space). seg_max × size_max stays below 2 GiB per request.
    public static let segMax: UInt32 = 254
    public static let sizeMax: UInt32 = 4 << 20
    public static let maxDiscardSectors: UInt32 = 1 << 22
    public static let maxWriteZeroesSectors: UInt32 = 1 << 22

    public init(exportID: String, backend: BlockBackend, readOnly: Bool, logicalBlockSize: UInt32,
                numQueues: UInt16, serial: String?, writeCache: Bool) {
        self.exportID = exportID
        self.backend = backend
        self.readOnly = readOnly
        self.logicalBlockSize = logicalBlockSize
        self.numQueues = numQueues
        self.serial = Array((serial ?? exportID).utf8.prefix(VirtioBlkLimits.idBytes))
        self.writeCache = Atomic(writeCache)
        stats = BlockStatsTable(queueCount: Int(numQueues))
    }

    /// Disk size in 512-byte sectors, as the guest sees it.
    @inline(__always)
    public var capacitySectors: UInt64 { backend.length >> VirtioBlkLimits.sectorShift }

    /// Whether the guest was told (and may rely on) a volatile write cache: when false,
    /// every write is made durable (FUA) before it completes.
    @inline(__always)
    public var writeCacheEnabled: Bool { writeCache.load(ordering: .relaxed) }

    /// Feature bits offered to the driver. A read-only device offers RO and no
    /// discard/write-zeroes (unlike qsd 7.2, which offers them and then fails them).
    public var offeredFeatures: UInt64 {
        var bits: [UInt64] = [VirtioBlkFeature.version1, VirtioBlkFeature.sizeMax, VirtioBlkFeature.segMax,
                              VirtioBlkFeature.blockSize, VirtioBlkFeature.topology, VirtioBlkFeature.flush,
                              VirtioBlkFeature.configWCE, VirtioBlkFeature.multiQueue,
                              VirtioBlkFeature.ringIndirectDescriptors, VirtioBlkFeature.ringEventIndex]
        if readOnly {
            bits.append(VirtioBlkFeature.readOnly)
        } else {
            bits.append(contentsOf: [VirtioBlkFeature.discard, VirtioBlkFeature.writeZeroes])
        }
        return bits.reduce(0) { $0 | VirtioBlkFeature.mask($1) }
    }

    /// The config space as it is now.
    public var config: VirtioBlkConfig {
        var config = VirtioBlkConfig()
        config.capacity = capacitySectors
        config.sizeMax = Self.sizeMax
        config.segMax = Self.segMax
        config.blockSize = logicalBlockSize
        config.topology = .init(physicalBlockExponent: 0, alignmentOffset: 0, minIOSize: 1, optIOSize: 0)
        config.writeback = writeCacheEnabled ? 1 : 0
        config.numQueues = numQueues
        if !readOnly {
            config.maxDiscardSectors = Self.maxDiscardSectors
            config.maxDiscardSegments = 1
            config.discardSectorAlignment = logicalBlockSize / 512
            config.maxWriteZeroesSectors = Self.maxWriteZeroesSectors
            config.maxWriteZeroesSegments = 1
            config.writeZeroesMayUnmap = 1
        }
        return config
    }

    /// GET_CONFIG: `size` bytes at `offset`, or nil when out of range.
    public func readConfig(offset: Int, size: Int) -> [UInt8]? {
        guard offset >= 0, size >= 0 else { return nil }
        return config.read(offset: UInt32(truncatingIfNeeded: offset), size: UInt32(truncatingIfNeeded: size))
    }

    /// SET_CONFIG: only the writeback byte may change (CONFIG_WCE). false if refused.
    public func writeConfig(offset: Int, bytes: [UInt8], configWCENegotiated: Bool) -> Bool {
        guard offset >= 0 else { return false }
        var updated = config
        do {
            try updated.applyWrite(offset: UInt32(truncatingIfNeeded: offset), bytes: bytes, configWCENegotiated: configWCENegotiated)
        } catch {
            return false
        }
        writeCache.store(updated.writeback != 0, ordering: .relaxed)
        return true
    }

    /// Request parsing limits for the current capacity.
    @inline(__always)
    func parser() -> VirtioBlkRequestParser {
        VirtioBlkRequestParser(capacitySectors: capacitySectors, readOnly: readOnly,
                               discardEnabled: !readOnly, maxDiscardSectors: Self.maxDiscardSectors, maxDiscardSegments: 1,
                               writeZeroesEnabled: !readOnly, maxWriteZeroesSectors: Self.maxWriteZeroesSectors,
                               maxWriteZeroesSegments: 1)
    }
}
