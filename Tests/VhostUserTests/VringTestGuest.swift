#if canImport(Glibc)
import Glibc
#endif
@testable import VhostUser

/// A fake guest for ring tests: anonymous mappings registered as guest memory regions, with
/// helpers to lay out a split ring and descriptors by hand. Frontend user addresses are
/// the guest physical ones plus `uvaBias`, so tests notice if the two spaces get mixed up.
final class VringTestGuest {
    static let uvaBias: UInt64 = 0x7f00_0000_0000
    /// Region A and B are adjacent in guest physical space (but not on the host); C is apart.
    static let standardRegions: [(gpa: UInt64, size: Int)] = [(0, 0x10000), (0x10000, 0x10000), (0x100000, 0x10000)]

    let memory: GuestMemory
    private var maps: [(UnsafeMutableRawPointer, Int)] = []

    // Ring layout inside region A.
    let descriptorTable: UInt64 = 0x1000
    let availableRing: UInt64 = 0x3000
    let usedRing: UInt64 = 0x4000
    var addresses: SplitVirtqueue.RingAddresses {
        .init(descriptorTable: descriptorTable + Self.uvaBias, availableRing: availableRing + Self.uvaBias,
              usedRing: usedRing + Self.uvaBias)
    }

    init(regions: [(gpa: UInt64, size: Int)] = VringTestGuest.standardRegions) {
        var mappings: [GuestMemoryMapping] = []
        for (gpa, size) in regions {
            let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)!
            precondition(p != UnsafeMutableRawPointer(bitPattern: -1), "test mmap failed")
            maps.append((p, size))
            let region = GuestMemoryRegionDescription(guestPhysAddr: gpa, memorySize: UInt64(size),
                                                      userAddr: gpa + Self.uvaBias, mmapOffset: 0)
            mappings.append(try! GuestMemoryMapping.unowned(region, hostAddress: p))
        }
        memory = try! GuestMemory(mappings: mappings)
    }

    deinit {
        for (p, size) in maps { munmap(p, size) }
    }

    func host(_ gpa: UInt64) -> UnsafeMutableRawPointer {
        memory.translate(gpa: gpa, length: 1)!
    }

    func write<T: FixedWidthInteger>(_ value: T, at gpa: UInt64) {
        host(gpa).storeBytes(of: value.littleEndian, as: T.self)
    }

    func read<T: FixedWidthInteger>(_: T.Type, at gpa: UInt64) -> T {
        T(littleEndian: host(gpa).loadUnaligned(as: T.self))
    }

    func fill(_ gpa: UInt64, _ bytes: [UInt8]) {
        for (i, b) in bytes.enumerated() { write(b, at: gpa + UInt64(i)) }
    }

    func queue(size: UInt32 = 16, features: VirtqueueFeatures = [], lastAvailable: UInt16 = 0) throws -> SplitVirtqueue {
        try SplitVirtqueue(memory: memory, size: size, addresses: addresses, features: features,
                           lastAvailableIndex: lastAvailable)
    }

    /// Writes descriptor `index` of a table at `table` (the ring's by default).
    func setDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0,
                       table: UInt64? = nil) {
        let base = (table ?? descriptorTable) + UInt64(16 * index)
        write(address, at: base)
        write(length, at: base + 8)
        write(flags, at: base + 12)
        write(next, at: base + 14)
    }

    var availableIndex: UInt16 {
        get { read(UInt16.self, at: availableRing + 2) }
        set { write(newValue, at: availableRing + 2) }
    }

    /// Puts heads into the available ring and advances avail.idx past them.
    func offer(_ heads: UInt16..., size: Int = 16) {
        var index = availableIndex
        for head in heads {
            write(head, at: availableRing + 4 + UInt64(2 * (Int(index) % size)))
            index &+= 1
        }
        availableIndex = index
    }

    var usedIndex: UInt16 { read(UInt16.self, at: usedRing + 2) }
    var usedFlags: UInt16 { read(UInt16.self, at: usedRing) }

    func usedElement(_ slot: Int) -> (id: UInt32, length: UInt32) {
        (read(UInt32.self, at: usedRing + 4 + UInt64(8 * slot)), read(UInt32.self, at: usedRing + 8 + UInt64(8 * slot)))
    }

    func setUsedEvent(_ value: UInt16, size: Int = 16) { write(value, at: availableRing + 4 + UInt64(2 * size)) }
    func availableEvent(size: Int = 16) -> UInt16 { read(UInt16.self, at: usedRing + 4 + UInt64(8 * size)) }
    func setAvailableFlags(_ flags: UInt16) { write(flags, at: availableRing) }
}

extension DescriptorChain {
    /// (guest physical address, length) of each span, for comparing with expectations.
    func spanList(_ guest: VringTestGuest, writable: Bool) -> [UInt64] {
        (writable ? writableSpans : readableSpans).map { guest.memory.guestPhysicalAddress(of: $0.iov_base!)! }
    }
    func spanLengths(writable: Bool) -> [Int] {
        (writable ? writableSpans : readableSpans).map(\.iov_len)
    }
}
