/// Why a guest memory table could not be built. Control path only; the descriptions are
/// meant for an operator's log.
public enum GuestMemoryError: Error, Sendable, Equatable, CustomStringConvertible {
    case zeroSize(GuestMemoryRegionDescription)
    /// guestPhysAddr + memorySize, userAddr + memorySize or mmapOffset + memorySize wraps,
    /// or the mapping does not fit this process's address space.
    case addressOverflow(GuestMemoryRegionDescription)
    case overlappingRegions(GuestMemoryRegionDescription, GuestMemoryRegionDescription)
    case tooManyRegions(count: Int, maximum: Int)
    case invalidFileDescriptor(GuestMemoryRegionDescription)
    case mmapFailed(GuestMemoryRegionDescription, errno: Int32)
    /// The region's file is shorter than mmapOffset + memorySize: touching the rest would
    /// kill the daemon with SIGBUS.
    case fileTooShort(GuestMemoryRegionDescription, fileSize: Int64)

    public var description: String {
        switch self {
        case .zeroSize(let r):
            return "guest memory region has size zero (\(r))"
        case .addressOverflow(let r):
            return "guest memory region wraps around the address space (\(r))"
        case .overlappingRegions(let a, let b):
            return "guest memory regions overlap in guest physical space (\(a)) and (\(b))"
        case .tooManyRegions(let count, let maximum):
            return "too many guest memory regions: \(count), at most \(maximum) supported"
        case .invalidFileDescriptor(let r):
            return "guest memory region came without a valid file descriptor (\(r))"
        case .mmapFailed(let r, let e):
            return "cannot map guest memory region (\(r)): mmap failed with errno \(e)"
                + " (is the frontend's memory backend shared, e.g. memfd or hugetlbfs with share=on?)"
        case .fileTooShort(let r, let size):
            return "guest memory region (\(r)) lies beyond the end of its file (\(size) bytes); refused"
        }
    }
}
