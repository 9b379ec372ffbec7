import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// The "guest memory" the frontend shares with the backend: one memfd, mapped shared.
/// Guest-physical addresses are offsets into it plus `guestPhysicalBase` (an arbitrary
/// choice; the backend only needs them to be consistent with the memory table).
///
/// Space is handed out by a bump allocator while setting up; nothing is freed until the
/// whole region is unmapped.
public final class SharedMemoryRegion: @unchecked Sendable {
    /// Where guest-physical address space starts (not 0, so a zero address is always a bug).
    public static let guestPhysicalBase: UInt64 = 0x1_0000_0000

    public let fd: Int32
    public let base: UnsafeMutableRawPointer
    public let size: Int
    private var used = 0

    /// Creates the memfd, sizes it and maps it (zero-filled). `size` is rounded up to 2 MiB.
    public init(size requested: Int, name: String = "spindle-bench") throws(FrontendError) {
        let granule = 2 << 20
        let size = (max(requested, 1) + granule - 1) / granule * granule
        let fd = memfd_create(name, UInt32(MFD_CLOEXEC))
        guard fd >= 0 else { throw FrontendError("memfd_create failed: \(errnoText(errno))") }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw FrontendError("cannot size shared memory to \(size) bytes: \(errnoText(code))")
        }
        let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            let code = errno
            Glibc.close(fd)
            throw FrontendError("cannot map \(size) bytes of shared memory: \(errnoText(code))")
        }
        self.fd = fd
        self.base = mapped
        self.size = size
    }

    deinit {
        munmap(base, size)
        Glibc.close(fd)
    }

    /// `byteCount` bytes aligned to `alignment` (a power of two), or an error if full.
    public func allocate(_ byteCount: Int, alignment: Int) throws(FrontendError) -> UnsafeMutableRawPointer {
        let start = (used + alignment - 1) & ~(alignment - 1)
        guard byteCount >= 0, start + byteCount <= size else {
            throw FrontendError("shared memory of \(size) bytes is too small (need \(start + byteCount))")
        }
        used = start + byteCount
        return base + start
    }

    /// The guest-physical address of a pointer into the region (descriptor addresses).
    public func guestPhysicalAddress(of pointer: UnsafeRawPointer) -> UInt64 {
        Self.guestPhysicalBase + UInt64(pointer - UnsafeRawPointer(base))
    }

    /// The user address of a pointer (ring addresses in SET_VRING_ADDR).
    public func userAddress(of pointer: UnsafeRawPointer) -> UInt64 {
        UInt64(UInt(bitPattern: pointer))
    }

    /// The first guest-physical address past the region (what the dirty log must reach).
    public var guestPhysicalEnd: UInt64 { Self.guestPhysicalBase + UInt64(size) }

    /// The memory-table entry describing the whole region.
    public var regionDescription: MemoryRegionDescription {
        MemoryRegionDescription(guestPhysAddr: Self.guestPhysicalBase, memorySize: UInt64(size),
                                userAddr: UInt64(UInt(bitPattern: base)), mmapOffset: 0)
    }
}
