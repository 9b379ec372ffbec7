import BlockIO
import ControlThread
import CSpindle
import Glibc
import IOThreads
import SpindleTestSupport
import Synchronization
import Testing
import VhostUser
import VirtioBlk

/// Real virtio-blk requests through a `VirtioBlkPackedQueue` on an IOThread (null-co with
/// read-zeroes): the generic server on the packed ring, with wrap-around on a ring of 3,
/// a dirty log, with the packed inflight region, and a hostile buffer id stopping the queue.
@Suite(.serialized) struct PackedRingRoundTripTests {
    @ControlActor final class Rig {
        let driver: MockPackedQueue
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 4)  // 256 pages
        let kickFD = eventfd(0, Int32(EFD_NONBLOCK)), callFD = eventfd(0, Int32(EFD_NONBLOCK))
        let thread: IOThread
        let device: VirtioBlkDevice

        init(name: String, size: Int = 3) throws {
            driver = MockPackedQueue(size: size)
            words.initialize(repeating: 0, count: 4)
            let backend = BlockBackend(name: name, permissions: [])
            _ = backend.beginQuiesce { }
            backend.setRoot(NullIO(length: 1 << 20, readZeroes: true, writable: true), permissions: [.consistentRead, .write])
            _ = backend.endQuiesce()
            device = VirtioBlkDevice(exportID: name, backend: backend, readOnly: false, logicalBlockSize: 512,
                                     numQueues: 1, serial: nil, writeCache: true)
            thread = try IOThread(id: name, cpu: nil, pollMaxNs: 0)
            thread.start()
        }

        func finish() {
            thread.stop()
            close(kickFD)
            close(callFD)
            words.deallocate()
        }

        var markedPages: [UInt64] { (0..<UInt64(256)).filter { words[Int($0 >> 6)] & (1 << ($0 & 63)) != 0 } }

        func header(_ type: UInt32, at gpa: UInt64) {
            driver.guest.write(type, at: gpa)
            driver.guest.write(UInt32(0), at: gpa + 4)
            driver.guest.write(UInt64(0), at: gpa + 8)
        }

        func kick() {
            var one: UInt64 = 1
            _ = write(kickFD, &one, 8)
        }

        /// Waits (up to 5 s) for the next used descriptor, then for the end of the batch.
        func nextUsed() async throws -> (id: UInt16, length: UInt32, flags: UInt16)? {
            var used = driver.takeUsed()
            for _ in 0..<500 where used == nil {
                try await Task.sleep(nanoseconds: 10_000_000)
                used = driver.takeUsed()
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                thread.post { _ in continuation.resume() }
            }
            return used
        }

        var callSignalled: Bool {
            var value: UInt64 = 0
            return read(callFD, &value, 8) == 8
        }
    }

    @Test @ControlActor func readsAndWritesAroundASmallRing() async throws {
        let rig = try Rig(name: "packed0")
        let driver = rig.driver
        let queue = VirtioBlkPackedQueue(device: rig.device, index: 0, ring: try driver.queue(), kickFD: rig.kickFD, callFD: rig.callFD)
        queue.setInitialDirtyLog(VirtqueueDirtyLog(bitmap: DirtyLogBitmap(words: rig.words, wordCount: 4),
                                                   usedRingGuestAddress: MockPackedQueue.deviceArea))
        rig.thread.post { queue.start(on: $0) }
        for round in 0..<7 {
            for i in 0..<4 { rig.words[i] = 0 }
            let id = UInt16(2 - round % 3)
            let status = UInt64(0x50000 + 0x1000 * round)
            driver.guest.write(UInt8(0xff), at: status)
            if round % 2 == 0 {
                // A 4 KiB read into page 0x40, as three descriptors (crossing the ring's end).
                rig.header(0, at: 0x20000)
                driver.offer([(0x20000, 16, false), (0x40000, 0x1000, true), (status, 1, true)], id: id)
            } else {
                rig.header(1, at: 0x21000)
                driver.offer([(0x21000, 16, false), (0x60000, 0x1000, false), (status, 1, true)], id: id)
            }
            rig.kick()
            let used = try #require(try await rig.nextUsed(), "round \(round)")
            #expect(used.id == id)
            #expect(used.length == (round % 2 == 0 ? 0x1001 : 1))
            #expect(driver.guest.read(UInt8.self, at: status) == 0, "VIRTIO_BLK_S_OK")
            let statusPage = status >> 12
            #expect(rig.markedPages == (round % 2 == 0 ? [1, 0x40, statusPage] : [1, statusPage]))
            #expect(rig.callSignalled)
        }
        let base = await queue.stop(on: rig.thread)
        // 7 buffers of 3 descriptors on a ring of 3: 7 laps, so avail is at 0 with wrap 0.
        #expect(base == PackedVringBase(availablePosition: 0, availableWrap: false, usedPosition: 0, usedWrap: false).encoded)
        rig.finish()
    }

    /// The server on a packed ring with an inflight region: requests are copied in and
    /// marked while taken, cleared once published; a process starting after a clean stop
    /// finds nothing in flight and the region's used position equals the reported base.
    @Test @ControlActor func inflightRegionTracksThePackedQueue() async throws {
        let rig = try Rig(name: "packed-inflight", size: 4)
        let driver = rig.driver
        let (fd, description) = try InflightBuffer.allocate(queues: 1, queueSize: 4)
        defer { close(fd) }
        let buffer = try InflightBuffer(fd: fd, description: description, maxQueues: 1)
        var ring = try driver.queue()
        let tracker = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
        let queue = VirtioBlkPackedQueue(device: rig.device, index: 0, ring: ring, kickFD: rig.kickFD, callFD: rig.callFD,
                                         inflight: tracker)
        rig.thread.post { queue.start(on: $0) }
        for round in 0..<6 {
            let id = UInt16(round % 4)
            let status = UInt64(0x50000 + 0x1000 * round)
            rig.header(round % 2 == 0 ? 0 : 1, at: 0x20000)
            driver.offer([(0x20000, 16, false), (0x40000, 0x1000, round % 2 == 0), (status, 1, true)], id: id)
            rig.kick()
            let used = try #require(try await rig.nextUsed(), "round \(round)")
            #expect(used.id == id)
            #expect(driver.guest.read(UInt8.self, at: status) == 0)
        }
        let base = PackedVringBase(encoded: await queue.stop(on: rig.thread))
        // 6 buffers of 3 descriptors on a ring of 4: 18 slots, used at 2 in the fifth lap.
        #expect(base == PackedVringBase(availablePosition: 2, availableWrap: true, usedPosition: 2, usedWrap: true))
        #expect((0..<4).allSatisfy { buffer.base.load(fromByteOffset: 32 + 32 * $0, as: UInt8.self) == 0 })
        #expect(buffer.base.load(fromByteOffset: 16, as: UInt16.self) == 2)  // used_idx
        var next = try driver.queue()
        #expect(try PackedInflightTracker(buffer: buffer, queue: 0, ring: &next).recoveredCount == 0)
        #expect(next.base == base)
        rig.finish()
    }

    @Test @ControlActor func packedRingIsOfferedOnlyWhenAsked() throws {
        let rig = try Rig(name: "packed2")
        #expect(VirtioBlkVhostUserDevice(device: rig.device).deviceFeatures & PackedVirtqueueLayout.featureMask == 0)
        let packed = VirtioBlkVhostUserDevice(device: rig.device, offersPackedRing: true)
        #expect(packed.deviceFeatures == rig.device.offeredFeatures | PackedVirtqueueLayout.featureMask)
        #expect(PackedVirtqueueLayout.featureMask == 1 << 34)
        rig.finish()
    }

    @Test @ControlActor func aHostileBufferIdStopsTheQueue() async throws {
        let rig = try Rig(name: "packed1")
        let driver = rig.driver
        let queue = VirtioBlkPackedQueue(device: rig.device, index: 0, ring: try driver.queue(), kickFD: rig.kickFD, callFD: rig.callFD)
        let reason = Mutex<String?>(nil)
        queue.onBroken = { _, why in reason.withLock { $0 = why } }
        rig.thread.post { queue.start(on: $0) }
        rig.header(0, at: 0x20000)
        driver.offer([(0x20000, 16, false), (0x50000, 1, true)], id: 3)
        rig.kick()
        for _ in 0..<500 where reason.withLock({ $0 }) == nil { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(reason.withLock { $0 } == "\(VirtqueueError.bufferIdOutOfRange(id: 3, queueSize: 3))")
        #expect(driver.takeUsed() == nil)
        _ = await queue.stop(on: rig.thread)
        rig.finish()
    }
}
