/// One memory region of the frontend, as VHOST_USER_SET_MEM_TABLE / ADD_MEM_REG describe it.
///
/// `guestPhysAddr` is where the guest sees the region, `userAddr` is where the frontend
/// process has it mapped (ring addresses in SET_VRING_ADDR use that space), and
/// `mmapOffset` is where the region starts inside the passed file descriptor.
public struct GuestMemoryRegionDescription: Sendable, Hashable, CustomStringConvertible {
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

    /// True if this names the same region as `other` (REM_MEM_REG matches on gpa, size and uva;
    /// the mmap offset is not compared).
    public func sameRegion(as other: GuestMemoryRegionDescription) -> Bool {
        guestPhysAddr == other.guestPhysAddr && memorySize == other.memorySize && userAddr == other.userAddr
    }

    public var description: String {
        "gpa 0x\(String(guestPhysAddr, radix: 16)) size 0x\(String(memorySize, radix: 16)) "
            + "uva 0x\(String(userAddr, radix: 16)) offset 0x\(String(mmapOffset, radix: 16))"
    }
}
