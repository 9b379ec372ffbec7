#if canImport(Glibc)
import Glibc
#endif
import CSpindle
import VhostUser

/// The driver's side of one split virtqueue in test memory (the role of rust-vmm's
/// virtio-queue `mock.rs`): anonymous mappings registered as guest memory regions, a ring
/// laid out in them, and helpers to write descriptors (also indirect tables and corrupt
/// ones), post chains and read what the device put on the used ring. Frontend user
/// addresses are the guest physical ones plus `uvaBias`, so a test can tell if the two
/// address spaces get mixed up.
public final class MockSplitQueue: @unchecked Sendable {
    /// A bias far from zero, for tests that must notice gpa/uva mix-ups.
    public static let separateUVABias: UInt64 = 0x7f00_0000_0000
    /// Region A and B are adjacent in guest physical space (but not on the host); C is apart.
    public static let standardRegions: [(gpa: UInt64, size: Int)] = [(0, 0x10000), (0x10000, 0x10000), (0x100000, 0x10000)]

    public let memory: GuestMemory
    public let uvaBias: UInt64
    /// The ring size `queue()`, `offer` and the event fields use unless told otherwise.
    public let size: Int
    public let descriptorTable: UInt64
    public let availableRing: UInt64
    public let usedRing: UInt64
    private var maps: [(UnsafeMutableRawPointer, Int)] = []

    /// The ring's addresses as the frontend gives them (user addresses).
    public var addresses: SplitVirtqueue.RingAddresses {
        .init(descriptorTable: descriptorTable + uvaBias, availableRing: availableRing + uvaBias, usedRing: usedRing + uvaBias)
    }

    public init(regions: [(gpa: UInt64, size: Int)] = MockSplitQueue.standardRegions,
                uvaBias: UInt64 = MockSplitQueue.separateUVABias, size: Int = 16,
                descriptorTable: UInt64 = 0x1000, availableRing: UInt64 = 0x3000, usedRing: UInt64 = 0x4000) {
        self.uvaBias = uvaBias
        self.size = size
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
        var mappings: [GuestMemoryMapping] = []
        for (gpa, bytes) in regions {
            let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)!
            precondition(p != UnsafeMutableRawPointer(bitPattern: -1), "test mmap failed")
            maps.append((p, bytes))
            let region = GuestMemoryRegionDescription(guestPhysAddr: gpa, memorySize: UInt64(bytes),
                                                      userAddr: gpa + uvaBias, mmapOffset: 0)
            mappings.append(try! GuestMemoryMapping.unowned(region, hostAddress: p))
        }
        memory = try! GuestMemory(mappings: mappings)
    }

    /// One 1 MiB region with gpa == uva and the ring at 0x1000 / 0x2000 / 0x3000.
    public static func flat(size: Int) -> MockSplitQueue {
        MockSplitQueue(regions: [(0, 0x100000)], uvaBias: 0, size: size,
                       descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000)
    }

    deinit {
        for (p, bytes) in maps { munmap(p, bytes) }
    }

    // MARK: raw guest memory

    public func host(_ gpa: UInt64) -> UnsafeMutableRawPointer {
        memory.translate(gpa: gpa, length: 1)!
    }

    public func write<T: FixedWidthInteger>(_ value: T, at gpa: UInt64) {
        host(gpa).storeBytes(of: value.littleEndian, as: T.self)
    }

    public func read<T: FixedWidthInteger>(_: T.Type, at gpa: UInt64) -> T {
        T(littleEndian: host(gpa).loadUnaligned(as: T.self))
    }

    public func write(_ bytes: [UInt8], at gpa: UInt64) {
        for (i, b) in bytes.enumerated() { write(b, at: gpa + UInt64(i)) }
    }

    public func read(_ count: Int, at gpa: UInt64) -> [UInt8] {
        (0..<count).map { read(UInt8.self, at: gpa + UInt64($0)) }
    }

    // MARK: the device's view

    /// The device's ring over this memory.
    public func queue(size: UInt32? = nil, features: VirtqueueFeatures = [], lastAvailable: UInt16 = 0) throws -> SplitVirtqueue {
        try SplitVirtqueue(memory: memory, size: size ?? UInt32(self.size), addresses: addresses, features: features,
                           lastAvailableIndex: lastAvailable)
    }

    // MARK: descriptors

    /// Writes descriptor `index` of a table at `table` (the ring's by default; an indirect
    /// table's address otherwise).
    public func setDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0,
                              table: UInt64? = nil) {
        let base = (table ?? descriptorTable) + UInt64(16 * index)
        write(address, at: base)
        write(length, at: base + 8)
        write(flags, at: base + 12)
        write(next, at: base + 14)
    }

    /// Links descriptors `first`, `first + 1`, … of `table` over `buffers` (NEXT on all but
    /// the last, WRITE on the writable ones); returns the head.
    @discardableResult
    public func setChain(_ buffers: [(gpa: UInt64, length: UInt32, writable: Bool)], first: Int = 0,
                         table: UInt64? = nil) -> UInt16 {
        for (i, buffer) in buffers.enumerated() {
            var flags: UInt16 = buffer.writable ? VirtqueueLayout.descriptorFlagWrite : 0
            if i + 1 < buffers.count { flags |= VirtqueueLayout.descriptorFlagNext }
            setDescriptor(first + i, address: buffer.gpa, length: buffer.length, flags: flags,
                          next: UInt16(first + i + 1), table: table)
        }
        return UInt16(first)
    }

    /// Lays out `buffers` as descriptors 0…n-1 and walks the chain from head 0 the way the
    /// device does.
    public func chain(_ buffers: [(gpa: UInt64, length: UInt32, writable: Bool)], capacity: Int = 16) throws -> DescriptorChain {
        setChain(buffers)
        let chain = DescriptorChain(capacity: capacity)
        try queue().walkChain(head: 0, into: chain)
        return chain
    }

    // MARK: corruption, for hostile-ring tests (an avail.idx jump: set `availableIndex`)

    /// Sets NEXT on descriptor `index` and points it at `target` (back along the chain: a loop).
    public func loopDescriptor(_ index: Int, to target: UInt16, table: UInt64? = nil) {
        let base = (table ?? descriptorTable) + UInt64(16 * index)
        write(read(UInt16.self, at: base + 12) | VirtqueueLayout.descriptorFlagNext, at: base + 12)
        write(target, at: base + 14)
    }

    /// Makes descriptor `index` claim a next descriptor beyond any table.
    public func pointPastTable(_ index: Int, table: UInt64? = nil) { loopDescriptor(index, to: 999, table: table) }

    // MARK: the available ring (driver-written)

    /// avail.idx, written with release ordering (the device may be polling it).
    public var availableIndex: UInt16 {
        get { read(UInt16.self, at: availableRing + 2) }
        set { spindle_store_release_u16(host(availableRing + 2), newValue.littleEndian) }
    }

    /// Puts heads into the available ring and advances avail.idx past them.
    public func offer(_ heads: UInt16..., size: Int? = nil) { offer(heads, size: size) }

    public func offer(_ heads: [UInt16], size: Int? = nil) {
        let size = size ?? self.size
        var index = availableIndex
        for head in heads {
            write(head, at: availableRing + 4 + UInt64(2 * (Int(index) % size)))
            index &+= 1
        }
        availableIndex = index
    }

    public func setUsedEvent(_ value: UInt16, size: Int? = nil) { write(value, at: availableRing + 4 + UInt64(2 * (size ?? self.size))) }
    public func setAvailableFlags(_ flags: UInt16) { write(flags, at: availableRing) }

    // MARK: the used ring (device-written)

    /// used.idx, read with acquire ordering.
    public var usedIndex: UInt16 { UInt16(littleEndian: spindle_load_acquire_u16(host(usedRing + 2))) }
    public var usedFlags: UInt16 { read(UInt16.self, at: usedRing) }

    /// Used ring slot `slot` as (id, length).
    public func usedElement(_ slot: Int) -> (id: UInt32, length: UInt32) {
        (read(UInt32.self, at: usedRing + 4 + UInt64(8 * slot)), read(UInt32.self, at: usedRing + 8 + UInt64(8 * slot)))
    }

    /// Every used element published so far (since used.idx 0), oldest first.
    public var usedElements: [(id: UInt32, length: UInt32)] {
        (0..<Int(usedIndex)).map { usedElement($0 % size) }
    }

    public func availableEvent(size: Int? = nil) -> UInt16 { read(UInt16.self, at: usedRing + 4 + UInt64(8 * (size ?? self.size))) }
}

extension DescriptorChain {
    /// (guest physical address) of each span, for comparing with expectations.
    public func spanList(_ guest: MockSplitQueue, writable: Bool) -> [UInt64] {
        (writable ? writableSpans : readableSpans).map { guest.memory.guestPhysicalAddress(of: $0.iov_base!)! }
    }
    public func spanLengths(writable: Bool) -> [Int] {
        (writable ? writableSpans : readableSpans).map(\.iov_len)
    }
}
