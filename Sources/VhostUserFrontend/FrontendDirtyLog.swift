import CSpindle
import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// The dirty log a frontend shares with its backend while migrating (vhost-user spec,
/// "Migration"): one bit per 4 KiB page of guest-physical address space, bit `page & 63`
/// of the little-endian u64 `page >> 6`, which the backend sets for every page it writes.
///
/// Laid out as QEMU's vhost log: a sealed memfd ("vhost-log") of 8 × `chunkCount` bytes,
/// enough u64 chunks to reach the end of the shared guest memory. `harvest` reads and
/// clears it the way QEMU's log sync does, so any thread may harvest while the backend
/// marks; only one thread should harvest at a time. Every chunk is scanned, not only those
/// of the shared memory, so a backend that marks elsewhere is seen too.
public final class FrontendDirtyLog: @unchecked Sendable {
    /// Guest-physical bytes per log bit (`VHOST_LOG_PAGE`).
    public static let pageSize: UInt64 = 4096
    public static let pageShift: UInt64 = 12
    /// Guest-physical bytes one u64 chunk covers (`VHOST_LOG_CHUNK`, 256 KiB).
    public static let chunkCoverage: UInt64 = pageSize * 64

    /// The memfd sent with SET_LOG_BASE (the backend maps its own copy).
    public let fd: Int32
    public let chunkCount: Int
    private let chunks: UnsafeMutablePointer<UInt64>

    /// SET_LOG_BASE's mmap_size: 8 bytes per chunk, not rounded to pages (QEMU's isn't).
    public var mmapSize: UInt64 { UInt64(chunkCount) * 8 }

    /// The SET_LOG_BASE payload for this log (offset 0 in the memfd).
    public var logDescription: VhostUserLogDescription {
        VhostUserLogDescription(mmapSize: mmapSize, mmapOffset: 0)
    }

    /// Chunks needed to cover guest-physical addresses below `end`, as QEMU's
    /// vhost_get_log_size computes it: the chunk of the last byte, plus one.
    public static func chunkCount(coveringUpTo end: UInt64) -> Int {
        Int((max(end, 1) - 1) / chunkCoverage + 1)
    }

    /// The log pages (guest-physical address >> 12) the bytes [address, address + length)
    /// fall on; empty for length 0.
    public static func pages(of address: UInt64, length: Int) -> ClosedRange<UInt64>? {
        guard length > 0 else { return nil }
        return (address >> pageShift)...((address + UInt64(length) - 1) >> pageShift)
    }

    /// Creates a zeroed log for guest-physical addresses below `end` (the end of the
    /// shared memory).
    public init(coveringUpTo end: UInt64) throws(FrontendError) {
        let count = Self.chunkCount(coveringUpTo: end)
        let bytes = count * 8
        let fd = memfd_create("vhost-log", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        guard fd >= 0 else { throw FrontendError("memfd_create for the dirty log failed: \(errnoText(errno))") }
        guard ftruncate(fd, off_t(bytes)) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw FrontendError("cannot size the dirty log to \(bytes) bytes: \(errnoText(code))")
        }
        // As QEMU: the backend must not be able to resize what both sides map.
        _ = fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)
        let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            let code = errno
            Glibc.close(fd)
            throw FrontendError("cannot map the dirty log (\(bytes) bytes): \(errnoText(code))")
        }
        self.fd = fd
        chunkCount = count
        chunks = mapped.bindMemory(to: UInt64.self, capacity: count)
    }

    deinit {
        munmap(chunks, chunkCount * 8)
        Glibc.close(fd)
    }

    /// Takes every dirty bit and clears it, calling `body` with each dirty page number
    /// (guest-physical address >> 12) in ascending order. A chunk that reads non-zero is
    /// swapped with 0 atomically (QEMU's sync): a bit set meanwhile lands in this harvest
    /// or the next, never in none. Returns the number of dirty pages.
    @discardableResult
    public func harvest(_ body: (UInt64) -> Void = { _ in }) -> Int {
        var found = 0
        for index in 0..<chunkCount {
            let slot = chunks + index
            guard spindle_atomic_load_u64(slot) != 0 else { continue }
            var bits = UInt64(littleEndian: spindle_atomic_exchange_u64(slot, 0))
            found += bits.nonzeroBitCount
            while bits != 0 {
                body(UInt64(index) << 6 | UInt64(bits.trailingZeroBitCount))
                bits &= bits &- 1
            }
        }
        return found
    }

    /// `harvest`, collecting the page numbers.
    public func harvestPages() -> [UInt64] {
        var pages: [UInt64] = []
        harvest { pages.append($0) }
        return pages
    }

    /// The dirty pages without clearing them (tests: what a log holds right now).
    public func dirtyPages() -> [UInt64] {
        var pages: [UInt64] = []
        for index in 0..<chunkCount {
            var bits = UInt64(littleEndian: spindle_atomic_load_u64(chunks + index))
            while bits != 0 {
                pages.append(UInt64(index) << 6 | UInt64(bits.trailingZeroBitCount))
                bits &= bits &- 1
            }
        }
        return pages
    }
}
