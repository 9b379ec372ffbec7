import SpindleTestSupport
import Testing
import VhostUser
@testable import VhostUserFrontend

@Suite struct BlkQueueLayoutTests {
    func makeQueue(indirect: Bool, slots: Int = 4) throws -> (BlkQueue, SharedMemoryRegion) {
        let layout = QueueMemoryLayout(queueSize: 16, slotCount: slots, maxRequestBytes: 4096)
        let memory = try SharedMemoryRegion(size: layout.totalBytes)
        let queue = try BlkQueue(index: 0, layout: layout, memory: memory, eventIndex: false, indirect: indirect,
                                 maxRequestBytes: 4096, kickFD: -1, callFD: -1)
        return (queue, memory)
    }

    @Test func directChainsAreHeaderDataStatus() throws {
        let (queue, memory) = try makeQueue(indirect: false)
        let table = queue.ring.descriptors
        queue.prepare(slot: 2, type: .read, sector: 80, byteCount: 4096)
        #expect(queue.head(of: 2) == 6)
        let next = VirtqueueLayout.descriptorFlagNext, write = VirtqueueLayout.descriptorFlagWrite
        let header = RingTestMemory.descriptor(table, 6)
        #expect(header == (memory.guestPhysicalAddress(of: queue.header(of: 2)), 16, next, 7))
        let data = RingTestMemory.descriptor(table, 7)
        #expect(data == (memory.guestPhysicalAddress(of: queue.data(of: 2)), 4096, next | write, 8))
        let status = RingTestMemory.descriptor(table, 8)
        #expect(status == (memory.guestPhysicalAddress(of: queue.statusPointer(of: 2)), 1, write, 0))
        #expect(queue.header(of: 2).load(as: UInt32.self) == 0)
        #expect(queue.header(of: 2).load(fromByteOffset: 8, as: UInt64.self) == 80)
        #expect(queue.status(of: 2) == BlkStatus.pending)

        // A write: the data is device-readable.
        queue.prepare(slot: 2, type: .write, sector: 8, byteCount: 512)
        #expect(RingTestMemory.descriptor(table, 7).1 == 512)
        #expect(RingTestMemory.descriptor(table, 7).2 == next)
        #expect(queue.header(of: 2).load(as: UInt32.self) == 1)
        // A flush: header straight to status.
        queue.prepare(slot: 2, type: .flush, sector: 0, byteCount: 0)
        #expect(RingTestMemory.descriptor(table, 6).3 == 8)
        queue.prepare(slot: 2, type: .read, sector: 0, byteCount: 4096)
        #expect(RingTestMemory.descriptor(table, 6).3 == 7)
    }

    @Test func indirectChainsLiveInTheSlot() throws {
        let (queue, memory) = try makeQueue(indirect: true)
        queue.prepare(slot: 3, type: .read, sector: 0, byteCount: 4096)
        #expect(queue.head(of: 3) == 3)
        let ringEntry = RingTestMemory.descriptor(queue.ring.descriptors, 3)
        #expect(ringEntry.1 == 48)
        #expect(ringEntry.2 == VirtqueueLayout.descriptorFlagIndirect)
        let table = queue.header(of: 3) + QueueMemoryLayout.indirectTableOffset
        #expect(ringEntry.0 == memory.guestPhysicalAddress(of: table))
        #expect(RingTestMemory.descriptor(table, 0).3 == 1)
        #expect(RingTestMemory.descriptor(table, 1).0 == memory.guestPhysicalAddress(of: queue.data(of: 3)))
        #expect(RingTestMemory.descriptor(table, 1).3 == 2)
    }

    @Test func usedIDsMapBackToSlots() throws {
        let (direct, _) = try makeQueue(indirect: false)
        #expect(direct.slot(forUsedID: 0) == 0)
        #expect(direct.slot(forUsedID: 9) == 3)
        #expect(direct.slot(forUsedID: 1) == nil)   // not a head
        #expect(direct.slot(forUsedID: 12) == nil)  // past the slots
        let (indirect, _) = try makeQueue(indirect: true)
        #expect(indirect.slot(forUsedID: 3) == 3)
        #expect(indirect.slot(forUsedID: 4) == nil)
    }

    @Test func addressesAreInsideTheRegion() throws {
        let (queue, memory) = try makeQueue(indirect: false)
        let region = memory.regionDescription
        #expect(region.guestPhysAddr == SharedMemoryRegion.guestPhysicalBase)
        let dataEnd = memory.guestPhysicalAddress(of: queue.data(of: 3)) + 4096
        #expect(dataEnd <= region.guestPhysAddr + region.memorySize)
        #expect(Int(bitPattern: queue.data(of: 0)) % 4096 == 0)
        #expect(Int(bitPattern: queue.ring.used) % 4096 == 0)
    }
}
