// The structured payloads of vhost-user messages (vhost-user.rst, "Payload"), with their
// wire sizes and encodings. Decoding from untrusted bytes is in VhostUserRequestDecoder;
// the `init?(reader:)` initialisers here only check that enough bytes are there.

/// "A vring state description": a ring index and a number whose meaning depends on the
/// request (ring size, avail index, enable flag, endianness).
public struct VhostUserVringState: Sendable, Hashable {
    public static let wireSize = 8
    public var index: UInt32
    public var num: UInt32

    public init(index: UInt32, num: UInt32) {
        self.index = index
        self.num = num
    }

    init?(reader: inout VhostUserByteReader) {
        guard let index = reader.readUInt32(), let num = reader.readUInt32() else { return nil }
        self.init(index: index, num: num)
    }

    func encode(into writer: inout VhostUserByteWriter) {
        writer.append(index)
        writer.append(num)
    }
}

/// "A vring address description" (SET_VRING_ADDR). The three ring addresses are front-end
/// user (virtual) addresses unless VIRTIO_F_IOMMU_PLATFORM was negotiated.
public struct VhostUserVringAddress: Sendable, Hashable {
    public static let wireSize = 40
    /// `VHOST_VRING_F_LOG`: log writes to the used ring at `logGuestAddr`.
    public static let flagLog: UInt32 = 1 << 0

    public var index: UInt32
    public var flags: UInt32
    public var descUserAddr: UInt64
    public var usedUserAddr: UInt64
    public var availUserAddr: UInt64
    public var logGuestAddr: UInt64

    public init(index: UInt32, flags: UInt32, descUserAddr: UInt64, usedUserAddr: UInt64,
                availUserAddr: UInt64, logGuestAddr: UInt64) {
        self.index = index
        self.flags = flags
        self.descUserAddr = descUserAddr
        self.usedUserAddr = usedUserAddr
        self.availUserAddr = availUserAddr
        self.logGuestAddr = logGuestAddr
    }

    init?(reader: inout VhostUserByteReader) {
        guard let index = reader.readUInt32(), let flags = reader.readUInt32(),
              let desc = reader.readUInt64(), let used = reader.readUInt64(),
              let avail = reader.readUInt64(), let log = reader.readUInt64() else { return nil }
        self.init(index: index, flags: flags, descUserAddr: desc, usedUserAddr: used,
                  availUserAddr: avail, logGuestAddr: log)
    }

    func encode(into writer: inout VhostUserByteWriter) {
        writer.append(index)
        writer.append(flags)
        writer.append(descUserAddr)
        writer.append(usedUserAddr)
        writer.append(availUserAddr)
        writer.append(logGuestAddr)
    }
}

/// One region of guest memory as the front-end describes it: where it is in guest-physical
/// space, its size, where the front-end mapped it (user address, the base for ring
/// addresses) and where it starts in the file descriptor that comes with it.
public struct MemoryRegionDescription: Sendable, Hashable {
    public static let wireSize = 32

    public var guestPhysAddr: UInt64
    public var memorySize: UInt64
    public var userAddr: UInt64
    public var mmapOffset: UInt64

    public init(guestPhysAddr: UInt64, memorySize: UInt64, userAddr: UInt64, mmapOffset: UInt64) {
        self.guestPhysAddr = guestPhysAddr
        self.memorySize = memorySize
        self.userAddr = userAddr
        self.mmapOffset = mmapOffset
    }

    init?(reader: inout VhostUserByteReader) {
        guard let gpa = reader.readUInt64(), let size = reader.readUInt64(),
              let uaddr = reader.readUInt64(), let offset = reader.readUInt64() else { return nil }
        self.init(guestPhysAddr: gpa, memorySize: size, userAddr: uaddr, mmapOffset: offset)
    }

    func encode(into writer: inout VhostUserByteWriter) {
        writer.append(guestPhysAddr)
        writer.append(memorySize)
        writer.append(userAddr)
        writer.append(mmapOffset)
    }
}

/// A memory region together with the file descriptor to mmap it from.
public struct VhostUserMemoryRegionFD: Sendable, Hashable {
    public var region: MemoryRegionDescription
    public var fd: Int32

    public init(region: MemoryRegionDescription, fd: Int32) {
        self.region = region
        self.fd = fd
    }
}

/// Limits of the memory-table messages.
public enum VhostUserMemoryTable {
    /// `VHOST_MEMORY_BASELINE_NREGIONS`: regions (and fds) in one SET_MEM_TABLE.
    public static let maxRegions = 8
    /// nregions (u32) + padding (u32).
    public static let headerSize = 8
    /// The largest SET_MEM_TABLE payload: the header and all eight region slots.
    public static let maxPayloadSize = headerSize + maxRegions * MemoryRegionDescription.wireSize
    /// ADD_MEM_REG / REM_MEM_REG: 64-bit padding, then one region.
    public static let singleRegionPayloadSize = 8 + MemoryRegionDescription.wireSize
}

/// "Log description" (SET_LOG_BASE with LOG_SHMFD): the dirty log's size and where it
/// starts in the fd sent along.
public struct VhostUserLogDescription: Sendable, Hashable {
    public static let wireSize = 16
    public var mmapSize: UInt64
    public var mmapOffset: UInt64

    public init(mmapSize: UInt64, mmapOffset: UInt64) {
        self.mmapSize = mmapSize
        self.mmapOffset = mmapOffset
    }

    init?(reader: inout VhostUserByteReader) {
        guard let size = reader.readUInt64(), let offset = reader.readUInt64() else { return nil }
        self.init(mmapSize: size, mmapOffset: offset)
    }

    func encode(into writer: inout VhostUserByteWriter) {
        writer.append(mmapSize)
        writer.append(mmapOffset)
    }
}

/// "Virtio device config space" (GET_CONFIG / SET_CONFIG): a window of the device's config
/// space. On the wire `size` is implied by `payload.count`.
public struct VhostUserConfigSpace: Sendable, Hashable {
    /// offset, size, flags: three u32 before the bytes.
    public static let headerSize = 12
    /// `VHOST_USER_MAX_CONFIG_SIZE`.
    public static let maxSize = 256
    /// `flags` value: the front-end writes a writable field on the guest's behalf.
    public static let flagWritable: UInt32 = 0
    /// `flags` value: the front-end restores config space during live migration.
    public static let flagLiveMigration: UInt32 = 1

    public var offset: UInt32
    public var flags: UInt32
    /// The config bytes (for a GET_CONFIG request: placeholder bytes of the wanted size).
    public var payload: [UInt8]

    public init(offset: UInt32, flags: UInt32, payload: [UInt8]) {
        self.offset = offset
        self.flags = flags
        self.payload = payload
    }

    /// Number of config-space bytes accessed.
    public var size: UInt32 { UInt32(truncatingIfNeeded: payload.count) }

    public var wireSize: Int { Self.headerSize + payload.count }

    func encode(into writer: inout VhostUserByteWriter) {
        writer.append(offset)
        writer.append(size)
        writer.append(flags)
        writer.append(contentsOf: payload)
    }
}

/// "Inflight description" (GET/SET_INFLIGHT_FD): the shared buffer that tracks in-flight
/// requests across back-end restarts.
public struct VhostUserInflightDescription: Sendable, Hashable {
    /// 8 + 8 + 2 + 2 = 20 bytes of fields, padded to 24: QEMU, libvhost-user and rust-vmm
    /// all send and expect `sizeof` of the naturally aligned C struct.
    public static let wireSize = 24

    public var mmapSize: UInt64
    public var mmapOffset: UInt64
    public var numQueues: UInt16
    public var queueSize: UInt16

    public init(mmapSize: UInt64, mmapOffset: UInt64, numQueues: UInt16, queueSize: UInt16) {
        self.mmapSize = mmapSize
        self.mmapOffset = mmapOffset
        self.numQueues = numQueues
        self.queueSize = queueSize
    }

    init?(reader: inout VhostUserByteReader) {
        guard let size = reader.readUInt64(), let offset = reader.readUInt64(),
              let queues = reader.readUInt16(), let queueSize = reader.readUInt16() else { return nil }
        self.init(mmapSize: size, mmapOffset: offset, numQueues: queues, queueSize: queueSize)
    }

    func encode(into writer: inout VhostUserByteWriter) {
        writer.append(mmapSize)
        writer.append(mmapOffset)
        writer.append(numQueues)
        writer.append(queueSize)
        writer.appendZeros(Self.wireSize - 20)
    }
}

/// The u64 payload of SET_VRING_KICK / SET_VRING_CALL / SET_VRING_ERR, decoded: the ring
/// index (bits 0-7) and the eventfd, or nil when bit 8 (`VHOST_USER_VRING_NOFD_MASK`)
/// says there is none and the ring is to be polled.
public struct VhostUserVringFile: Sendable, Hashable {
    public static let indexMask: UInt64 = 0xff
    public static let noFDMask: UInt64 = 1 << 8

    public var index: UInt8
    public var fd: Int32?

    public init(index: UInt8, fd: Int32?) {
        self.index = index
        self.fd = fd
    }

    /// The u64 as it goes on the wire.
    public var wireValue: UInt64 {
        UInt64(index) | (fd == nil ? Self.noFDMask : 0)
    }
}
