import SpindleTestSupport
import Testing
@testable import VhostUser

@Suite struct VringDescriptorChainTests {
    let next = VirtqueueLayout.descriptorFlagNext
    let write = VirtqueueLayout.descriptorFlagWrite
    let indirect = VirtqueueLayout.descriptorFlagIndirect

    @Test func linuxLayoutChain() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue()
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 4)
        // Data crosses from region A into region B: two host spans.
        guest.setDescriptor(4, address: 0xF800, length: 0x1000, flags: next | write, next: 2)
        guest.setDescriptor(2, address: 0x100000, length: 1, flags: write)
        let chain = DescriptorChain(capacity: 8)
        try queue.walkChain(head: 0, into: chain)
        #expect(chain.head == 0)
        #expect(chain.readableLength == 16)
        #expect(chain.writableLength == 0x1001)
        #expect(chain.spanList(guest, writable: false) == [0x8000])
        #expect(chain.spanList(guest, writable: true) == [0xF800, 0x10000, 0x100000])
        #expect(chain.spanLengths(writable: true) == [0x800, 0x800, 1])
    }

    @Test func zeroLengthDescriptorsAreSkipped() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue()
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 1)
        guest.setDescriptor(1, address: 0xDEAD_0000, length: 0, flags: write | next, next: 2)  // unmapped but empty
        guest.setDescriptor(2, address: 0x9000, length: 8, flags: next, next: 3)
        guest.setDescriptor(3, address: 0xA000, length: 1, flags: write)
        let chain = DescriptorChain(capacity: 8)
        try queue.walkChain(head: 0, into: chain)
        #expect(chain.readableSpanCount == 2)
        #expect(chain.writableSpanCount == 1)
        #expect(chain.readableLength == 24)
    }

    @Test func loopIsAnError() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue()
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 1)
        guest.setDescriptor(1, address: 0x8000, length: 16, flags: next, next: 0)
        let chain = DescriptorChain(capacity: 64)
        #expect(throws: VirtqueueError.chainTooLong(tableSize: 16)) { try queue.walkChain(head: 0, into: chain) }
        #expect(chain.readableSpanCount == 0)
        // A self-loop too.
        guest.setDescriptor(5, address: 0x8000, length: 0, flags: next, next: 5)
        #expect(throws: VirtqueueError.chainTooLong(tableSize: 16)) { try queue.walkChain(head: 5, into: chain) }
    }

    @Test func chainLongerThanRing() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue(size: 4)
        for i in 0..<4 { guest.setDescriptor(i, address: 0x8000, length: 4, flags: next, next: UInt16((i + 1) % 4)) }
        let chain = DescriptorChain(capacity: 64)
        #expect(throws: VirtqueueError.chainTooLong(tableSize: 4)) { try queue.walkChain(head: 0, into: chain) }
    }

    @Test func indicesOutOfRange() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue()
        let chain = DescriptorChain(capacity: 8)
        #expect(throws: VirtqueueError.headOutOfRange(head: 16, queueSize: 16)) { try queue.walkChain(head: 16, into: chain) }
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 16)
        #expect(throws: VirtqueueError.nextOutOfRange(next: 16, tableSize: 16)) { try queue.walkChain(head: 0, into: chain) }
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 0xFFFF)
        #expect(throws: VirtqueueError.nextOutOfRange(next: 0xFFFF, tableSize: 16)) { try queue.walkChain(head: 0, into: chain) }
    }

    @Test func readableAfterWritable() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue()
        guest.setDescriptor(0, address: 0x8000, length: 1, flags: write | next, next: 1)
        guest.setDescriptor(1, address: 0x9000, length: 16)
        let chain = DescriptorChain(capacity: 8)
        #expect(throws: VirtqueueError.readableAfterWritable) { try queue.walkChain(head: 0, into: chain) }
    }

    @Test func buffersOutsideGuestMemory() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue()
        let chain = DescriptorChain(capacity: 8)
        // Between regions.
        guest.setDescriptor(0, address: 0x50000, length: 16)
        #expect(throws: VirtqueueError.bufferNotMapped(address: 0x50000, length: 16)) { try queue.walkChain(head: 0, into: chain) }
        // Straddling the end of region C.
        guest.setDescriptor(0, address: 0x10FFF0, length: 32)
        #expect(throws: VirtqueueError.bufferNotMapped(address: 0x10FFF0, length: 32)) { try queue.walkChain(head: 0, into: chain) }
        // Straddling the end of B (A+B are contiguous, but nothing follows B).
        guest.setDescriptor(0, address: 0xFFF0, length: 0x10020, flags: write)
        #expect(throws: VirtqueueError.bufferNotMapped(address: 0xFFF0, length: 0x10020)) { try queue.walkChain(head: 0, into: chain) }
        // Address + length wraps.
        guest.setDescriptor(0, address: UInt64.max - 10, length: 100)
        #expect(throws: VirtqueueError.bufferAddressWraps(address: UInt64.max - 10, length: 100)) { try queue.walkChain(head: 0, into: chain) }
        guest.setDescriptor(0, address: UInt64.max, length: 1)
        // The end (exclusive) would be 2^64: treated as wrapping, like regions ending there.
        #expect(throws: VirtqueueError.bufferAddressWraps(address: UInt64.max, length: 1)) { try queue.walkChain(head: 0, into: chain) }
    }

    @Test func totalLengthOverflow() throws {
        // A 4 GiB region (reserved, never touched) to hold descriptors that add up past 4 GiB.
        let guest = MockSplitQueue(regions: [(0, 0x10000), (0x1_0000_0000, 0x1_0000_0000)])
        let queue = try guest.queue()
        guest.setDescriptor(0, address: 0x1_0000_0000, length: UInt32.max, flags: next, next: 1)
        guest.setDescriptor(1, address: 0x1_0000_0000, length: 1, flags: write)
        let chain = DescriptorChain(capacity: 8)
        #expect(throws: VirtqueueError.totalLengthOverflow) { try queue.walkChain(head: 0, into: chain) }
        guest.setDescriptor(0, address: 0x1_0000_0000, length: UInt32.max - 1, flags: next, next: 1)
        try queue.walkChain(head: 0, into: chain)
        #expect(chain.readableLength + chain.writableLength == Int(UInt32.max))
    }

    @Test func tooManySpans() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue()
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 1)
        guest.setDescriptor(1, address: 0xFF00, length: 0x200, flags: write)  // two spans
        let chain = DescriptorChain(capacity: 2)
        #expect(throws: VirtqueueError.tooManySpans(capacity: 2)) { try queue.walkChain(head: 0, into: chain) }
        let roomy = DescriptorChain(capacity: 3)
        try queue.walkChain(head: 0, into: roomy)
        #expect(roomy.writableSpanCount == 2)
    }

    @Test func indirectTable() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue(features: [.indirectDescriptors])
        let table: UInt64 = 0x6000
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 2, table: table)
        guest.setDescriptor(2, address: 0x9000, length: 4096, flags: next | write, next: 1, table: table)
        guest.setDescriptor(1, address: 0xA000, length: 1, flags: write, table: table)
        // The WRITE flag on the descriptor naming the table is ignored.
        guest.setDescriptor(3, address: table, length: 48, flags: indirect | write)
        let chain = DescriptorChain(capacity: 8)
        try queue.walkChain(head: 3, into: chain)
        #expect(chain.head == 3)
        #expect(chain.spanList(guest, writable: false) == [0x8000])
        #expect(chain.spanList(guest, writable: true) == [0x9000, 0xA000])
        #expect(chain.writableLength == 4097)
    }

    @Test func directDescriptorsThenIndirect() throws {
        let guest = MockSplitQueue()
        let queue = try guest.queue(features: [.indirectDescriptors])
        let table: UInt64 = 0x6000
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 1)
        guest.setDescriptor(1, address: table, length: 32, flags: indirect)
        guest.setDescriptor(0, address: 0x9000, length: 512, flags: next, next: 1, table: table)
        guest.setDescriptor(1, address: 0xA000, length: 1, flags: write, table: table)
        let chain = DescriptorChain(capacity: 8)
        try queue.walkChain(head: 0, into: chain)
        #expect(chain.readableLength == 528)
        #expect(chain.writableLength == 1)
    }

    @Test func indirectErrors() throws {
        let guest = MockSplitQueue()
        let chain = DescriptorChain(capacity: 8)
        let table: UInt64 = 0x6000
        guest.setDescriptor(0, address: table, length: 32, flags: indirect)
        let plain = try guest.queue()
        #expect(throws: VirtqueueError.indirectNotNegotiated) { try plain.walkChain(head: 0, into: chain) }

        let queue = try guest.queue(features: [.indirectDescriptors])
        for length: UInt32 in [0, 24, 16 * 32769] {
            guest.setDescriptor(0, address: table, length: length, flags: indirect)
            #expect(throws: VirtqueueError.invalidIndirectTableLength(length)) { try queue.walkChain(head: 0, into: chain) }
        }
        guest.setDescriptor(0, address: table, length: 32, flags: indirect | next, next: 1)
        #expect(throws: VirtqueueError.indirectWithNext) { try queue.walkChain(head: 0, into: chain) }
        // Table crossing from A into B: not one contiguous host range.
        guest.setDescriptor(0, address: 0xFFF0, length: 32, flags: indirect)
        #expect(throws: VirtqueueError.indirectTableNotMapped(address: 0xFFF0, length: 32)) { try queue.walkChain(head: 0, into: chain) }
        guest.setDescriptor(0, address: 0x50000, length: 32, flags: indirect)
        #expect(throws: VirtqueueError.indirectTableNotMapped(address: 0x50000, length: 32)) { try queue.walkChain(head: 0, into: chain) }

        // Nested indirect.
        guest.setDescriptor(0, address: table, length: 32, flags: indirect)
        guest.setDescriptor(0, address: table, length: 32, flags: indirect, table: table)
        #expect(throws: VirtqueueError.nestedIndirect) { try queue.walkChain(head: 0, into: chain) }
        // Loop inside the table.
        guest.setDescriptor(0, address: 0x8000, length: 16, flags: next, next: 1, table: table)
        guest.setDescriptor(1, address: 0x8000, length: 16, flags: next, next: 0, table: table)
        #expect(throws: VirtqueueError.chainTooLong(tableSize: 2)) { try queue.walkChain(head: 0, into: chain) }
        // next beyond the table (though inside the ring's size).
        guest.setDescriptor(1, address: 0x8000, length: 16, flags: next, next: 2, table: table)
        #expect(throws: VirtqueueError.nextOutOfRange(next: 2, tableSize: 2)) { try queue.walkChain(head: 0, into: chain) }
    }
}
