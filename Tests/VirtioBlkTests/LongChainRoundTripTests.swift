import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import SpindleTestSupport
import Testing
import VhostUser
import VirtioBlk

/// A real virtio-blk request whose chain is longer than a slot's own room (20 spans): it
/// borrows a span block from the IOThread, its data lands in every one of its buffers, and
/// the block is back in the pool once it completed.
@Suite(.serialized) struct LongChainRoundTripTests {
    @Test @ControlActor func aReadOf40BuffersThroughAnIndirectTableFillsEveryBuffer() async throws {
        let rig = RoundTripGuest()
        let guest = rig.guest
        let backend = BlockBackend(name: "long0", permissions: [])
        _ = backend.beginQuiesce { }
        backend.setRoot(NullIO(length: 1 << 20, readZeroes: true, writable: true), permissions: [.consistentRead, .write])
        _ = backend.endQuiesce()
        let device = VirtioBlkDevice(exportID: "long0", backend: backend, readOnly: false, logicalBlockSize: 512,
                                     numQueues: 1, serial: nil, writeCache: true)
        let thread = try IOThread(id: "long-chain-test", cpu: nil, pollMaxNs: 0)
        thread.start()
        let kickFD = eventfd(0, Int32(EFD_NONBLOCK)), callFD = eventfd(0, Int32(EFD_NONBLOCK))
        let queue = VirtioBlkQueue(device: device, index: 0, ring: try guest.queue(features: .indirectDescriptors),
                                   kickFD: kickFD, callFD: callFD)
        thread.post { queue.start(on: $0) }

        // Header at 0x20000, 40 buffers of 512 bytes 1 KiB apart from 0x40000 (all 0xaa),
        // status at 0x50000: 42 entries in an indirect table at 0x30000.
        let count = 40
        rig.header(0, at: 0x20000)
        for i in 0..<count { guest.write([UInt8](repeating: 0xaa, count: 512), at: 0x40000 + 0x400 * UInt64(i)) }
        guest.write(UInt8(0xff), at: 0x50000)
        var buffers: [(gpa: UInt64, length: UInt32, writable: Bool)] = [(0x20000, 16, false)]
        buffers += (0..<count).map { (0x40000 + 0x400 * UInt64($0), 512, true) }
        buffers.append((0x50000, 1, true))
        guest.setChain(buffers, first: 0, table: 0x30000)
        guest.setDescriptor(0, address: 0x30000, length: UInt32(16 * buffers.count), flags: VirtqueueLayout.descriptorFlagIndirect)
        try await rig.serve(head: 0, on: thread, kickFD: kickFD, usedIndex: 1)

        #expect(guest.read(UInt8.self, at: 0x50000) == 0, "VIRTIO_BLK_S_OK")
        #expect(guest.usedElement(0).length == UInt32(count * 512 + 1))
        for i in 0..<count {
            #expect(guest.read(512, at: 0x40000 + 0x400 * UInt64(i)) == [UInt8](repeating: 0, count: 512), "buffer \(i)")
        }
        let blocks = await withCheckedContinuation { continuation in
            thread.post { continuation.resume(returning: ($0.spanBlocks.allocatedCount, $0.spanBlocks.inUseCount)) }
        }
        #expect(blocks.0 == 1 && blocks.1 == 0)

        _ = await queue.stop(on: thread)
        thread.stop()
        close(kickFD)
        close(callFD)
    }
}
