/// One memory region of the frontend, as VHOST_USER_SET_MEM_TABLE / ADD_MEM_REG describe it
/// (the wire struct is `MemoryRegionDescription`).
///
/// `guestPhysAddr` is where the guest sees the region, `userAddr` is where the frontend
/// process has it mapped (ring addresses in SET_VRING_ADDR use that space), and
/// `mmapOffset` is where the region starts inside the passed file descriptor.
public typealias GuestMemoryRegionDescription = MemoryRegionDescription

extension MemoryRegionDescription: CustomStringConvertible {
    /// True if this names the same region as `other` (REM_MEM_REG matches on gpa, size and uva;
    /// the mmap offset is not compared).
    public func sameRegion(as other: MemoryRegionDescription) -> Bool {
        guestPhysAddr == other.guestPhysAddr && memorySize == other.memorySize && userAddr == other.userAddr
    }

    public var description: String {
        "gpa 0x\(String(guestPhysAddr, radix: 16)) size 0x\(String(memorySize, radix: 16)) "
            + "uva 0x\(String(userAddr, radix: 16)) offset 0x\(String(mmapOffset, radix: 16))"
    }
}
