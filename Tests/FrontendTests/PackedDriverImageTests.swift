import Testing
import SpindleTestSupport
import VhostUser
@testable import VhostUserFrontend

/// The packed driver's image chains write what its per-field writers write, and its used
/// batch reads each used descriptor once.
struct PackedDriverImageTests {
    /// A driver ring over fresh zeroed memory (the areas say ENABLE); the memory lives as
    /// long as the returned owner.
    static func ring(size: Int, ids: Int) -> (PackedDriverVirtqueue, UnsafeMutableRawPointer) {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 16 * size + 64, alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: 16 * size + 64)
        let driver = PackedDriverVirtqueue(size: size, descriptors: memory + 64, driverArea: memory, deviceArea: memory + 16,
                                           eventIndex: false, idCount: ids)
        return (driver, memory)
    }

    /// Request after request (laps of the ring, chains crossing its end at odd sizes, reads,
    /// writes and chains of two), both ways leave byte-identical rings and positions.
    @Test(arguments: [3, 4, 7, 8, 11, 128])
    func imageChainsMatchAppendRequest(size: Int) {
        let ids = max(1, size / 3)
        let (referenceRing, referenceMemory) = Self.ring(size: size, ids: ids)
        let (imagedRing, imagedMemory) = Self.ring(size: size, ids: ids)
        var reference = referenceRing, imaged = imagedRing
        defer { referenceMemory.deallocate(); imagedMemory.deallocate() }
        let next = VirtqueueLayout.descriptorFlagNext, write = VirtqueueLayout.descriptorFlagWrite
        func header(_ id: Int) -> UInt64 { 0x10_0000 + UInt64(id) * 128 }
        func data(_ id: Int) -> UInt64 { 0x20_0000 + UInt64(id) * 4096 }
        for id in 0..<ids {
            let image = UInt16(id)
            imaged.writeImage(id: image, index: 0, address: header(id), length: 16, flags: next)
            imaged.writeImage(id: image, index: 1, address: data(id), length: 4096, flags: next)
            imaged.writeImage(id: image, index: 2, address: header(id) + 16, length: 1, flags: write)
            imaged.writeImage(id: image, index: 3, address: header(id) + 16, length: 1, flags: write)
        }
        for round in 0..<(size * 8) {
            let id = UInt16(round % ids)
            let dataFlags = round % 2 == 0 ? write : 0
            let length = UInt32(512 * (1 + round % 8))
            let withData = round % 5 != 4 && size >= 3
            reference.appendRequest(header: header(Int(id)), data: data(Int(id)), dataLength: withData ? length : 0,
                                    dataFlags: dataFlags, status: header(Int(id)) + 16, id: id)
            if withData {
                imaged.updateImage(id: id, index: 1, length: length, flags: next | dataFlags)
                #expect(imaged.imageLength(id: id, index: 1) == length)
                imaged.appendImageChain(id: id, count: 3)
            } else {
                // Header and status: the status image moved up to the data descriptor's place.
                imaged.writeImage(id: id, index: 1, address: header(Int(id)) + 16, length: 1, flags: write)
                imaged.appendImageChain(id: id, count: 2)
                imaged.writeImage(id: id, index: 1, address: data(Int(id)), length: 4096, flags: next)
            }
            let same = UnsafeRawBufferPointer(start: referenceMemory, count: 16 * size + 64)
                .elementsEqual(UnsafeRawBufferPointer(start: imagedMemory, count: 16 * size + 64))
            #expect(same, "round \(round): the rings differ")
            #expect(imaged.base == reference.base)
            #expect(imaged.chainLengths[Int(id)] == reference.chainLengths[Int(id)])
        }
        #expect(imaged.publish() == reference.publish())
    }

    /// Writes a used descriptor at `position` as a device would.
    static func markUsed(_ driver: PackedDriverVirtqueue, at position: Int, wrap: Bool, id: UInt16, length: UInt32) {
        let entry = driver.descriptors + 16 * position
        entry.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: id, toByteOffset: 12, as: UInt16.self)
        entry.storeBytes(of: PackedVirtqueueLayout.usedFlags(wrap: wrap), toByteOffset: 14, as: UInt16.self)
    }

    @Test
    func aCountedBatchIsTakenWholeAndAnIDUsedTwiceBreaksIt() {
        let (ring, memory) = Self.ring(size: 12, ids: 4)
        var driver = ring
        defer { memory.deallocate() }
        for id in UInt16(0)..<4 {
            driver.appendDescriptor(address: 0x1000, length: 16, flags: VirtqueueLayout.descriptorFlagNext, id: id)
            driver.appendDescriptor(address: 0x2000, length: 1, flags: VirtqueueLayout.descriptorFlagWrite, id: id)
            driver.finishChain(id: id)
        }
        #expect(driver.pendingUsedCount() == 0)
        #expect(driver.popUsed().id == UInt32.max, "popped with nothing counted")
        Self.markUsed(driver, at: 0, wrap: true, id: 2, length: 7)
        Self.markUsed(driver, at: 2, wrap: true, id: 0, length: 8)
        #expect(driver.pendingUsedCount() == 2)
        // A third, used after the count: the batch's rest first, then the new one.
        Self.markUsed(driver, at: 4, wrap: true, id: 3, length: 9)
        let first = driver.popUsed()
        #expect(first.id == 2 && first.length == 7)
        #expect(driver.pendingUsedCount() == 1)
        let second = driver.popUsed()
        #expect(second.id == 0 && second.length == 8)
        #expect(driver.pendingUsedCount() == 1)
        let third = driver.popUsed()
        #expect(third.id == 3 && third.length == 9)
        #expect(driver.pendingUsedCount() == 0)
        // Id 1 used twice in one batch: the second time it is no longer in flight.
        Self.markUsed(driver, at: 6, wrap: true, id: 1, length: 1)
        Self.markUsed(driver, at: 8, wrap: true, id: 1, length: 1)
        #expect(driver.pendingUsedCount() == nil)
    }
}
