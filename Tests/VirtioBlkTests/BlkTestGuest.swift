#if canImport(Glibc)
import Glibc
#endif
import VhostUser
@testable import VirtioBlk

/// One 1 MiB guest memory region (gpa == uva) with a 64-entry ring, for building request
/// chains by hand and walking them the way the device does.
final class BlkTestGuest {
    static let regionSize = 0x100000
    let base: UnsafeMutableRawPointer
    let memory: GuestMemory
    let queue: SplitVirtqueue

    init() {
        base = mmap(nil, Self.regionSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        let region = GuestMemoryRegionDescription(guestPhysAddr: 0, memorySize: UInt64(Self.regionSize), userAddr: 0, mmapOffset: 0)
        memory = try! GuestMemory(mappings: [try! GuestMemoryMapping.unowned(region, hostAddress: base)])
        queue = try! SplitVirtqueue(memory: memory, size: 64,
                                    addresses: .init(descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000),
                                    features: [])
    }

    deinit { munmap(base, Self.regionSize) }

    func write(_ bytes: [UInt8], at gpa: UInt64) {
        for (i, b) in bytes.enumerated() { base.storeBytes(of: b, toByteOffset: Int(gpa) + i, as: UInt8.self) }
    }

    func read(_ count: Int, at gpa: UInt64) -> [UInt8] {
        (0..<count).map { base.load(fromByteOffset: Int(gpa) + $0, as: UInt8.self) }
    }

    func pointer(_ gpa: UInt64) -> UnsafeMutableRawPointer { base + Int(gpa) }

    /// Links descriptors 0..n-1 over `buffers` and walks the chain from head 0.
    func chain(_ buffers: [(gpa: UInt64, length: UInt32, writable: Bool)], capacity: Int = 16) throws -> DescriptorChain {
        for (i, buffer) in buffers.enumerated() {
            let d = base + 0x1000 + 16 * i
            var flags: UInt16 = buffer.writable ? VirtqueueLayout.descriptorFlagWrite : 0
            if i + 1 < buffers.count { flags |= VirtqueueLayout.descriptorFlagNext }
            d.storeBytes(of: buffer.gpa.littleEndian, as: UInt64.self)
            d.storeBytes(of: buffer.length.littleEndian, toByteOffset: 8, as: UInt32.self)
            d.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
            d.storeBytes(of: UInt16(i + 1).littleEndian, toByteOffset: 14, as: UInt16.self)
        }
        let chain = DescriptorChain(capacity: capacity)
        try queue.walkChain(head: 0, into: chain)
        return chain
    }
}

func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

/// A request header: type, reserved, sector.
func header(_ type: UInt32, sector: UInt64 = 0) -> [UInt8] {
    littleEndianBytes(type) + littleEndianBytes(UInt32(0)) + littleEndianBytes(sector)
}

func segment(_ sector: UInt64, _ count: UInt32, flags: UInt32 = 0) -> [UInt8] {
    littleEndianBytes(sector) + littleEndianBytes(count) + littleEndianBytes(flags)
}
