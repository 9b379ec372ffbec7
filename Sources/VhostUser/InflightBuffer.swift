import CSpindle
import Glibc

/// The shared inflight buffer's layout (vhost-user.rst, "Inflight I/O tracking"): one region
/// per queue. A split ring's region is a 16-byte header
/// `{features u64, version u16, desc_num u16, last_batch_head u16, used_idx u16}` followed by
/// `desc_num` 16-byte descriptor states `{inflight u8, padding[5], next u16, counter u64}`; a
/// packed ring's is a 32-byte header and 32-byte states (`PackedInflightLayout`).
///
/// GET_INFLIGHT_FD does not say which layout the queues will use (a guest may switch layouts
/// across a reset while the frontend keeps the buffer), so every region Spindle allocates is
/// big enough for the packed layout, rounded up to 64 bytes. A buffer sized for split regions
/// only (an older Spindle's) is still accepted, and packed queues then run untracked.
public enum InflightLayout {
    public static let headerBytes = 16
    public static let descriptorStateBytes = 16
    public static let regionAlignment = 64
    /// The only layout version Spindle writes and accepts.
    public static let version: UInt16 = 1

    /// A split ring's region.
    public static func splitRegionBytes(queueSize: Int) -> Int {
        aligned(headerBytes + descriptorStateBytes * queueSize)
    }

    /// A packed ring's region.
    public static func packedRegionBytes(queueSize: Int) -> Int {
        aligned(PackedInflightLayout.headerBytes + PackedInflightLayout.descriptorStateBytes * queueSize)
    }

    /// One queue's region in the buffers Spindle allocates: room for either layout.
    public static func queueRegionBytes(queueSize: Int) -> Int {
        max(splitRegionBytes(queueSize: queueSize), packedRegionBytes(queueSize: queueSize))
    }

    public static func bufferBytes(queues: Int, queueSize: Int) -> Int {
        queues * queueRegionBytes(queueSize: queueSize)
    }

    private static func aligned(_ raw: Int) -> Int {
        (raw + regionAlignment - 1) / regionAlignment * regionAlignment
    }
}

public struct InflightError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ text: String) { description = text }
}

/// The inflight buffer of one frontend session, mapped here: allocated for GET_INFLIGHT_FD,
/// mapped from SET_INFLIGHT_FD (after a reconnect it holds what the previous backend process
/// left). Everything about it comes from the untrusted frontend and is checked before use.
/// Queues keep it alive while their IOThread writes into it; unmapped when the last one goes.
public final class InflightBuffer: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int
    public let queueCount: Int
    public let queueSize: Int
    /// Bytes from one queue's region to the next.
    public let regionStride: Int
    /// Whether the regions have room for the packed layout (false: a split-only buffer).
    public let holdsPackedRegions: Bool

    /// A new zero-filled memfd for GET_INFLIGHT_FD, sized for `queues` × `queueSize`. The
    /// caller sends the fd and closes it; the frontend hands it back with SET_INFLIGHT_FD.
    public static func allocate(queues: Int, queueSize: Int) throws(InflightError) -> (fd: Int32, description: VhostUserInflightDescription) {
        try validate(queues: queues, queueSize: queueSize)
        let size = InflightLayout.bufferBytes(queues: queues, queueSize: queueSize)
        let fd = memfd_create("spindle-inflight", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        guard fd >= 0 else { throw InflightError("memfd_create failed: \(String(cString: strerror(errno)))") }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw InflightError("cannot size the inflight buffer to \(size) bytes: \(String(cString: strerror(code)))")
        }
        // Nobody may shrink it under a mapping (SIGBUS) or grow it.
        _ = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)
        return (fd, VhostUserInflightDescription(mmapSize: UInt64(size), mmapOffset: 0,
                                                  numQueues: UInt16(queues), queueSize: UInt16(queueSize)))
    }

    /// Maps the buffer SET_INFLIGHT_FD describes. `maxQueues` is the device's queue count. The
    /// fd stays the caller's (the mapping outlives it).
    public init(fd: Int32, description: VhostUserInflightDescription, maxQueues: Int) throws(InflightError) {
        let queues = Int(description.numQueues)
        let queueSize = Int(description.queueSize)
        try Self.validate(queues: queues, queueSize: queueSize)
        guard queues <= maxQueues else {
            throw InflightError("the inflight buffer describes \(queues) queues but the device has \(maxQueues)")
        }
        let full = InflightLayout.queueRegionBytes(queueSize: queueSize)
        let splitOnly = InflightLayout.splitRegionBytes(queueSize: queueSize)
        let stride = description.mmapSize >= UInt64(queues * full) ? full : splitOnly
        let needed = queues * stride
        guard description.mmapSize >= UInt64(needed), description.mmapSize <= UInt64(needed) + 1 << 20 else {
            throw InflightError("inflight buffer size \(description.mmapSize) does not fit \(queues) queues of \(queueSize) (\(needed) bytes)")
        }
        let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        guard description.mmapOffset % pageSize == 0, description.mmapOffset <= UInt64(Int64.max) - description.mmapSize else {
            throw InflightError("inflight buffer offset \(description.mmapOffset) is not page aligned")
        }
        // Touching a shared mapping past the end of its file is SIGBUS: the file must be big
        // enough and sealed against shrinking (ours and libvhost-user's are; else try to seal).
        _ = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)
        let seals = fcntl(fd, F_GET_SEALS)
        guard seals >= 0, seals & F_SEAL_SHRINK != 0 else {
            throw InflightError("the inflight buffer fd cannot be sealed against shrinking (not a sealable memfd)")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw InflightError("cannot stat the inflight buffer fd: \(String(cString: strerror(errno)))")
        }
        guard info.st_size >= 0, UInt64(info.st_size) >= description.mmapOffset + UInt64(needed) else {
            throw InflightError("the inflight buffer file has \(info.st_size) bytes, \(description.mmapOffset + UInt64(needed)) needed")
        }
        let mapped = mmap(nil, needed, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(description.mmapOffset))
        guard let mapped, mapped != MAP_FAILED else {
            throw InflightError("cannot map the inflight buffer (\(needed) bytes): \(String(cString: strerror(errno)))")
        }
        base = mapped
        size = needed
        queueCount = queues
        self.queueSize = queueSize
        regionStride = stride
        holdsPackedRegions = stride >= InflightLayout.packedRegionBytes(queueSize: queueSize)
    }

    deinit {
        munmap(base, size)
    }

    private static func validate(queues: Int, queueSize: Int) throws(InflightError) {
        guard queues >= 1, queues <= 1024 else { throw InflightError("inflight buffer for \(queues) queues (1...1024 allowed)") }
        guard queueSize >= 1, queueSize <= 32768, queueSize & (queueSize - 1) == 0 else {
            throw InflightError("inflight buffer queue size \(queueSize) is not a power of two up to 32768")
        }
    }

    /// Where queue `index`'s region starts, if the buffer has one for it.
    func queueRegion(_ index: Int) -> UnsafeMutableRawPointer? {
        guard index >= 0, index < queueCount else { return nil }
        return base + index * regionStride
    }
}
