#if canImport(Glibc)
import Glibc
#endif
import VhostUser

/// A small guest for ring fuzzing: 64 KiB of memory the input fills, seen as two adjacent
/// regions (so buffers can cross a region boundary) and a third one after a hole; rings at
/// fixed places in the first region. Allocated with malloc each time, so AddressSanitizer
/// catches any access outside it.
final class FuzzGuest {
    static let memorySize = 0x10000
    static let userAddressOffset: UInt64 = 0x7f00_0000_0000
    static let descriptorTable: UInt64 = 0x0
    static let availableRing: UInt64 = 0x1000
    static let usedRing: UInt64 = 0x2000
    /// Guest physical layout: [0, 0x8000) and [0x8000, 0xc000) adjacent, [0x20000, 0x24000).
    static let layout: [(gpa: UInt64, hostOffset: Int, size: Int)] = [
        (0x0, 0x0, 0x8000), (0x8000, 0x8000, 0x4000), (0x20000, 0xc000, 0x4000),
    ]

    let host: UnsafeMutableRawPointer
    let memory: GuestMemory

    init(contents: UnsafeRawBufferPointer) {
        let host = UnsafeMutableRawPointer.allocate(byteCount: Self.memorySize, alignment: 4096)
        self.host = host
        host.initializeMemory(as: UInt8.self, repeating: 0, count: Self.memorySize)
        if let source = contents.baseAddress {
            host.copyMemory(from: source, byteCount: min(contents.count, Self.memorySize))
        }
        let mappings = Self.layout.map { part in
            // Cannot fail: fixed, valid regions.
            try! GuestMemoryMapping.unowned(
                MemoryRegionDescription(guestPhysAddr: part.gpa, memorySize: UInt64(part.size),
                                        userAddr: part.gpa + Self.userAddressOffset, mmapOffset: 0),
                hostAddress: host + part.hostOffset)
        }
        memory = try! GuestMemory(mappings: mappings)
    }

    deinit { host.deallocate() }

    /// A queue of 2^(sizeCode % 9) entries on the fixed ring addresses.
    func queue(sizeCode: UInt8, features: VirtqueueFeatures, lastAvailableIndex: UInt16) -> SplitVirtqueue {
        let addresses = SplitVirtqueue.RingAddresses(
            descriptorTable: Self.descriptorTable + Self.userAddressOffset,
            availableRing: Self.availableRing + Self.userAddressOffset,
            usedRing: Self.usedRing + Self.userAddressOffset)
        // Cannot fail: sizes up to 256 fit the fixed layout.
        return try! SplitVirtqueue(memory: memory, size: UInt32(1) << (sizeCode % 9), addresses: addresses,
                                   features: features, lastAvailableIndex: lastAvailableIndex)
    }

    /// Whether [pointer, pointer + length) lies inside the guest's memory.
    func holds(_ pointer: UnsafeRawPointer?, length: Int) -> Bool {
        guard let pointer else { return length == 0 }
        let start = UnsafeRawPointer(host)
        return pointer >= start && length <= Self.memorySize && pointer - start <= Self.memorySize - length
    }

    func holds(_ spans: UnsafeMutableBufferPointer<iovec>) -> Bool {
        spans.allSatisfy { holds($0.iov_base, length: $0.iov_len) }
    }
}

extension UnsafeRawPointer {
    static func - (lhs: UnsafeRawPointer, rhs: UnsafeRawPointer) -> Int { rhs.distance(to: lhs) }
}

/// Pops every available head of `queue` and walks its chain, checking the spans; calls
/// `body` for each walked chain; stops at the first driver error, as the device does.
func walkAvailableChains(_ queue: inout SplitVirtqueue, guest: FuzzGuest, chain: DescriptorChain,
                         _ body: (DescriptorChain) -> UInt32) {
    var handled = 0
    while handled <= Int(queue.size) {
        let head: UInt16?
        do throws(VirtqueueError) {
            head = try queue.popAvailable()
        } catch {
            queue.markBroken()
            return
        }
        guard let head else { return }
        handled += 1
        do throws(VirtqueueError) {
            try queue.walkChain(head: head, into: chain)
        } catch {
            precondition(chain.readableSpanCount == 0 && chain.writableSpanCount == 0, "a failed walk left spans behind")
            queue.markBroken()
            return
        }
        precondition(guest.holds(chain.readableSpans) && guest.holds(chain.writableSpans), "a span points outside guest memory")
        precondition(chain.readableSpans.reduce(0, { $0 + $1.iov_len }) == chain.readableLength, "readable length disagrees with its spans")
        precondition(chain.writableSpans.reduce(0, { $0 + $1.iov_len }) == chain.writableLength, "writable length disagrees with its spans")
        queue.pushUsed(head: head, writtenLength: body(chain))
    }
    precondition(handled <= Int(queue.size), "popped more heads than the ring holds")
}
