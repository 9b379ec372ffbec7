import SpindleTestSupport
import Testing
@testable import VhostUser

/// The packed ring's descriptor walk and used-descriptor writer against a driver that plays
/// by the spec (`MockPackedQueue`): odd ring sizes with wrap-around, chains across the ring's
/// end, indirect tables, batched used descriptors, and ring setup checks.
@Suite struct PackedVirtqueueTests {
    static let data: UInt64 = 0x10000

    /// Many rounds of two-descriptor buffers (so chains straddle the ring's end) on rings of
    /// odd sizes: every buffer is read back where the driver put it, and every used
    /// descriptor reaches the driver with its id and length, across several wraps.
    @Test(arguments: [3, 7, 256])
    func wrapsAroundOddSizes(size: Int) throws {
        let driver = MockPackedQueue(size: size)
        var ring = try driver.queue()
        let chain = DescriptorChain(capacity: 8)
        for round in 0..<(3 * size + 5) {
            let id = UInt16(round % size)
            let out = Self.data + UInt64(round % 64) * 0x1000
            driver.offer([(out, 16, false), (out + 0x800, 512, true)], id: id)
            #expect(try ring.availableCount() == 1)
            let taken = try #require(try ring.popAvailable())
            #expect(taken == id)
            #expect(try ring.popAvailable() == nil)
            try ring.readChain(head: taken, into: chain)
            #expect(chain.head == id)
            #expect(chain.spanList(driver.guest, writable: false) == [out])
            #expect(chain.spanList(driver.guest, writable: true) == [out + 0x800])
            #expect(chain.readableLength == 16 && chain.writableLength == 512)
            ring.addUsed(head: taken, writtenLength: 513)
            #expect(driver.takeUsed() == nil, "not visible before publishUsed")
            ring.publishUsed()
            let used = try #require(driver.takeUsed())
            #expect(used.id == id && used.length == 513)
            #expect(ring.inFlight == 0)
        }
        #expect(ring.base == PackedVringBase(availablePosition: UInt16(driver.nextAvailable), availableWrap: driver.availableWrap,
                                             usedPosition: UInt16(driver.nextUsed), usedWrap: driver.usedWrap))
    }

    /// A chain as long as the ring is fine; the used descriptor skips all its slots.
    @Test func chainFillingTheRing() throws {
        let driver = MockPackedQueue(size: 5)
        var ring = try driver.queue()
        let buffers = (0..<5).map { (Self.data + UInt64($0) * 0x100, UInt32(0x100), $0 >= 3) }
        driver.offer(buffers, id: 4)
        let chain = DescriptorChain(capacity: 8)
        let id = try #require(try ring.popAvailable())
        try ring.readChain(head: id, into: chain)
        #expect(chain.readableSpanCount == 3 && chain.writableSpanCount == 2)
        ring.pushUsed(head: id, writtenLength: 0x200)
        #expect(driver.takeUsed()?.id == 4)
        #expect(ring.base.usedPosition == 0 && ring.base.usedWrap == false)
        #expect(ring.base.availablePosition == 0 && ring.base.availableWrap == false)
    }

    /// Buffers completed out of order in one batch: nothing is visible until the batch is
    /// published (the first used descriptor's flags are written last), then the driver
    /// finds them in completion order, each skipping its own buffer's slot count.
    @Test func batchedUsedDescriptors() throws {
        let driver = MockPackedQueue(size: 7)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, false), (Self.data + 0x1000, 1, true)], id: 5)
        driver.offer([(Self.data + 0x2000, 16, false)], id: 0)
        driver.offer([(Self.data + 0x3000, 16, false), (Self.data + 0x4000, 8, false), (Self.data + 0x5000, 1, true)], id: 3)
        var ids: [UInt16] = []
        while let id = try ring.popAvailable() { ids.append(id) }
        #expect(ids == [5, 0, 3])
        #expect(ring.inFlight == 3)
        ring.addUsed(head: 3, writtenLength: 1)
        ring.addUsed(head: 5, writtenLength: 1)
        ring.addUsed(head: 0, writtenLength: 0)
        #expect(driver.takeUsed() == nil)
        // The second and third are already flagged used; the driver still cannot see them.
        #expect(driver.flags(at: 3) & 0x8080 == 0x8080)
        ring.publishUsed()
        #expect(driver.takeUsed()?.id == 3)
        #expect(driver.takeUsed()?.id == 5)
        let last = try #require(driver.takeUsed())
        #expect(last.id == 0 && last.flags & 2 == 0, "no WRITE flag for a zero written length")
        #expect(driver.takeUsed() == nil)
        #expect(ring.base.usedPosition == 6 && ring.base.usedWrap)
    }

    @Test func indirectTable() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue(features: .indirectDescriptors)
        let table: UInt64 = 0x9000
        driver.offerIndirect(table: table, entries: [(Self.data, 16, false), (Self.data + 0x100, 0, false),
                                                     (Self.data + 0x200, 4096, true), (Self.data + 0x2000, 1, true)], id: 2)
        let chain = DescriptorChain(capacity: 8)
        let id = try #require(try ring.popAvailable())
        try ring.readChain(head: id, into: chain)
        #expect(chain.spanList(driver.guest, writable: false) == [Self.data])
        #expect(chain.spanList(driver.guest, writable: true) == [Self.data + 0x200, Self.data + 0x2000])
        #expect(chain.writableLength == 4097)
        ring.pushUsed(head: id, writtenLength: 4097)
        #expect(driver.takeUsed()?.length == 4097)
    }

    /// An id is free again once its used descriptor is written; its reuse is then fine.
    @Test func idReusedAfterCompletion() throws {
        let driver = MockPackedQueue(size: 4)
        var ring = try driver.queue()
        for _ in 0..<6 {
            driver.offer([(Self.data, 16, false)], id: 1)
            let id = try #require(try ring.popAvailable())
            ring.pushUsed(head: id, writtenLength: 0)
            #expect(driver.takeUsed()?.id == 1)
        }
    }

    @Test func setupChecks() throws {
        let driver = MockPackedQueue(size: 3)
        #expect(throws: VirtqueueSetupError.invalidPackedSize(0)) { try driver.queue(size: 0) }
        #expect(throws: VirtqueueSetupError.invalidPackedSize(32769)) { try driver.queue(size: 32769) }
        let memory = driver.memory
        var addresses = driver.addresses
        addresses.descriptorRing = 0x1008
        #expect(throws: VirtqueueSetupError.misaligned(.descriptorRing, userAddress: 0x1008, alignment: 16)) {
            try PackedVirtqueue(memory: memory, size: 3, addresses: addresses, features: [])
        }
        addresses = driver.addresses
        addresses.driverArea = 0x8002
        #expect(throws: VirtqueueSetupError.misaligned(.driverArea, userAddress: 0x8002, alignment: 4)) {
            try PackedVirtqueue(memory: memory, size: 3, addresses: addresses, features: [])
        }
        addresses = driver.addresses
        addresses.deviceArea = 0x100000
        #expect(throws: VirtqueueSetupError.notMapped(.deviceArea, userAddress: 0x100000, length: 4)) {
            try PackedVirtqueue(memory: memory, size: 3, addresses: addresses, features: [])
        }
        addresses = driver.addresses
        addresses.descriptorRing = 0x100000 - 32
        #expect(throws: VirtqueueSetupError.notMapped(.descriptorRing, userAddress: 0x100000 - 32, length: 48)) {
            try PackedVirtqueue(memory: memory, size: 3, addresses: addresses, features: [])
        }
        let base = PackedVringBase(availablePosition: 3, availableWrap: true, usedPosition: 0, usedWrap: true)
        #expect(throws: VirtqueueSetupError.invalidPackedBase(base.encoded, size: 3)) {
            try PackedVirtqueue(memory: memory, size: 3, addresses: driver.addresses, features: [], base: base)
        }
    }
}
