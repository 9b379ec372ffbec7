import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import SpindleTestSupport
import Testing
import VhostUser
import VirtioBlk

/// Guest memory and a dirty log for the round trip.
final class RoundTripGuest: @unchecked Sendable {
    /// 1 MiB of guest memory, gpa == uva, the used ring at 0x3000 (page 3, logged there).
    let guest = MockSplitQueue.flat(size: 16)
    let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 4)  // 256 pages

    init() { words.initialize(repeating: 0, count: 4) }
    deinit { words.deallocate() }

    var markedPages: [UInt64] { (0..<UInt64(256)).filter { words[Int($0 >> 6)] & (1 << ($0 & 63)) != 0 } }

    /// A request header at `gpa`: type, reserved, sector 0.
    func header(_ type: UInt32, at gpa: UInt64) {
        guest.write(type, at: gpa)
        guest.write(UInt32(0), at: gpa + 4)
        guest.write(UInt64(0), at: gpa + 8)
    }

    /// Offers `head`, kicks, waits (up to 5 s) for used.idx, then for the end of the batch.
    func serve(head: UInt16, on thread: IOThread, kickFD: Int32, usedIndex: UInt16) async throws {
        guest.offer(head)
        var one: UInt64 = 1
        _ = write(kickFD, &one, 8)
        for _ in 0..<500 where guest.usedIndex != usedIndex { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(guest.usedIndex == usedIndex)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            thread.post { _ in continuation.resume() }
        }
    }
}

/// Real virtio-blk requests through a `VirtioBlkQueue` on an IOThread (a null-co data path
/// with read-zeroes), with a dirty log installed: the pages the device wrote are marked.
@Suite(.serialized) struct DirtyLogRoundTripTests {
    @Test @ControlActor func aReadMarksItsDataStatusAndUsedRingAWriteOnlyStatusAndUsedRing() async throws {
        let rig = RoundTripGuest()
        let guest = rig.guest, words = rig.words
        let backend = BlockBackend(name: "dirty0", permissions: [])
        _ = backend.beginQuiesce { }
        backend.setRoot(NullIO(length: 1 << 20, readZeroes: true, writable: true), permissions: [.consistentRead, .write])
        _ = backend.endQuiesce()
        let device = VirtioBlkDevice(exportID: "dirty0", backend: backend, readOnly: false, logicalBlockSize: 512,
                                     numQueues: 1, serial: nil, writeCache: true)
        let thread = try IOThread(id: "dirty-log-test", cpu: nil, pollMaxNs: 0)
        thread.start()
        let kickFD = eventfd(0, Int32(EFD_NONBLOCK)), callFD = eventfd(0, Int32(EFD_NONBLOCK))
        let queue = VirtioBlkQueue(device: device, index: 0, ring: try guest.queue(), kickFD: kickFD, callFD: callFD)
        queue.setInitialDirtyLog(VirtqueueDirtyLog(bitmap: DirtyLogBitmap(words: words, wordCount: 4), usedRingGuestAddress: 0x3000))
        thread.post { queue.start(on: $0) }

        // A read of 8 KiB into 0x40800 (pages 0x40-0x42), status at 0x50000.
        rig.header(0, at: 0x20000)
        guest.write(UInt8(0xff), at: 0x50000)
        guest.setChain([(0x20000, 16, false), (0x40800, 0x2000, true), (0x50000, 1, true)], first: 0)
        try await rig.serve(head: 0, on: thread, kickFD: kickFD, usedIndex: 1)
        #expect(guest.read(UInt8.self, at: 0x50000) == 0, "VIRTIO_BLK_S_OK")
        #expect(rig.markedPages == [0x3, 0x40, 0x41, 0x42, 0x50])

        // A write of 4 KiB from 0x60000: only its status (0x70000) and the used ring.
        for i in 0..<4 { words[i] = 0 }
        rig.header(1, at: 0x21000)
        guest.setChain([(0x21000, 16, false), (0x60000, 0x1000, false), (0x70000, 1, true)], first: 4)
        try await rig.serve(head: 4, on: thread, kickFD: kickFD, usedIndex: 2)
        #expect(guest.read(UInt8.self, at: 0x70000) == 0)
        #expect(rig.markedPages == [0x3, 0x70])

        _ = await queue.stop(on: thread)
        thread.stop()
        close(kickFD)
        close(callFD)
    }
}
