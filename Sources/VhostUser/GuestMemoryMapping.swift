#if canImport(Glibc)
import Glibc
#endif

/// One frontend memory region mapped into this process.
///
/// Mappings are reference counted on their own so that a new `GuestMemory` table (after
/// ADD_MEM_REG / REM_MEM_REG / SET_MEM_TABLE) can share the mappings that did not change,
/// and a removed region stays mapped until the last table using it (perhaps still held by
/// an IOThread) is released. Immutable, hence safe to share between threads.
public final class GuestMemoryMapping: @unchecked Sendable {
    public let region: GuestMemoryRegionDescription
    /// Host address of the region's first byte (guestPhysAddr / userAddr).
    public let hostAddress: UnsafeMutableRawPointer
    /// The whole mmap (from file offset 0), unmapped in deinit; nil when not owned.
    private let mapBase: UnsafeMutableRawPointer?
    private let mapLength: Int

    /// Maps `fd` for a region: MAP_SHARED, read-write, from file offset 0 for
    /// `mmapOffset + memorySize` bytes; the region starts `mmapOffset` bytes in.
    /// Takes ownership of `fd`: it is closed whether or not mapping succeeds.
    public static func map(_ region: GuestMemoryRegionDescription, fd: Int32) throws(GuestMemoryError) -> GuestMemoryMapping {
        defer { if fd >= 0 { _ = close(fd) } }
        try validate(region)
        guard fd >= 0 else { throw .invalidFileDescriptor(region) }
        let (total, overflow) = region.mmapOffset.addingReportingOverflow(region.memorySize)
        guard !overflow, total <= UInt64(Int.max) else { throw .addressOverflow(region) }
        let length = Int(total)
        try guardAgainstTruncation(region, fd: fd, needed: total)
        let flags = MAP_SHARED | MAP_NORESERVE
        let result = mmap(nil, length, PROT_READ | PROT_WRITE, flags, fd, 0)
        guard let base = result, base != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw .mmapFailed(region, errno: errno)
        }
        return GuestMemoryMapping(region: region, hostAddress: base + Int(region.mmapOffset),
                                  mapBase: base, mapLength: length)
    }

    /// A guest access past the end of the region's file would raise SIGBUS in an IOThread.
    /// So a file that is too short is refused, and a memfd that allows sealing is sealed
    /// against shrinking, so the frontend cannot truncate it later (QEMU's memfd backend is
    /// sealed already). Other files (hugetlbfs, /dev/shm) cannot be protected this way.
    private static func guardAgainstTruncation(_ region: GuestMemoryRegionDescription, fd: Int32, needed: UInt64) throws(GuestMemoryError) {
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return }
        guard info.st_size >= 0, UInt64(info.st_size) >= needed else {
            throw .fileTooShort(region, fileSize: Int64(info.st_size))
        }
        _ = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)
    }

    /// Wraps memory the caller already mapped (tests, or a frontend-less harness). Not
    /// unmapped on deinit: the caller keeps it alive for as long as this object lives.
    public static func unowned(_ region: GuestMemoryRegionDescription, hostAddress: UnsafeMutableRawPointer) throws(GuestMemoryError) -> GuestMemoryMapping {
        try validate(region)
        guard region.memorySize <= UInt64(Int.max),
              UInt(bitPattern: hostAddress).addingReportingOverflow(UInt(region.memorySize)).overflow == false
        else { throw .addressOverflow(region) }
        return GuestMemoryMapping(region: region, hostAddress: hostAddress, mapBase: nil, mapLength: 0)
    }

    private init(region: GuestMemoryRegionDescription, hostAddress: UnsafeMutableRawPointer,
                 mapBase: UnsafeMutableRawPointer?, mapLength: Int) {
        self.region = region
        self.hostAddress = hostAddress
        self.mapBase = mapBase
        self.mapLength = mapLength
    }

    deinit {
        if let mapBase { _ = munmap(mapBase, mapLength) }
    }

    /// Size and wrap-around checks every region must pass.
    static func validate(_ region: GuestMemoryRegionDescription) throws(GuestMemoryError) {
        guard region.memorySize > 0 else { throw .zeroSize(region) }
        // End addresses are kept exclusive in UInt64, so an end of exactly 2^64 is rejected too.
        guard !region.guestPhysAddr.addingReportingOverflow(region.memorySize).overflow,
              !region.userAddr.addingReportingOverflow(region.memorySize).overflow
        else { throw .addressOverflow(region) }
    }
}
