import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// The frontend's packed rings against real backends: Spindle with packed-ring=on (reads,
/// writes and flushes with the data read back, ring sizes that wrap evenly and oddly), and
/// qemu-storage-daemon, which offers no packed rings (the frontend must refuse clearly).
@Suite(.serialized)
struct PackedRingBackendTests {
    static let ringVariants: [(size: Int, slots: Int, indirect: Bool)] =
        [(128, 8, false), (7, 2, false), (7, 4, true), (128, 8, true)]

    static func spindleOnFile(_ image: String) -> (String) -> [String] {
        { socket in
            ["--blockdev", "driver=file,node-name=n0,filename=\(image)",
             "--export", "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=\(socket),writable=on,num-queues=1,packed-ring=on"]
        }
    }

    @Test(.enabled(if: BackendProcess.Kind.spindle.executable != nil, "spindle is not built"), arguments: ringVariants)
    func roundTripThroughSpindle(ring: (size: Int, slots: Int, indirect: Bool)) throws {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("packed-\(UUID().uuidString).img").path
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: image) }
        try FileHandle(forWritingAtPath: image)!.truncate(atOffset: 16 << 20)
        let backend = try BackendProcess.start(.spindle, arguments: Self.spindleOnFile(image))
        defer { backend.stop() }
        var options = FrontendOptions(queueCount: 1, slotsPerQueue: ring.slots, maxRequestBytes: 8192,
                                      queueSize: ring.size, indirectDescriptors: ring.indirect)
        options.ringLayout = .packed
        let frontend = try VhostUserBlkFrontend(socketPath: backend.socketPath, options: options)
        #expect(frontend.negotiatedFeatures & PackedVirtqueueLayout.featureMask != 0)
        var queue = frontend.queues[0]
        #expect(queue.isPacked && queue.ringSize == ring.size)

        // Enough rounds that the ring wraps several times (both wrap counters flip).
        for round in 0..<(3 * ring.size) {
            let slot = round % ring.slots
            let sector = UInt64(round % 64) * 16
            let data = queue.data(of: slot)
            for i in 0..<8192 { data.storeBytes(of: Self.pattern(i, round), toByteOffset: i, as: UInt8.self) }
            #expect(try completePacked(&queue, slot: slot, type: .write, sector: sector, bytes: 8192) == BlkStatus.ok)
            data.initializeMemory(as: UInt8.self, repeating: 0xEE, count: 8192)
            #expect(try completePacked(&queue, slot: slot, type: .read, sector: sector, bytes: 8192) == BlkStatus.ok)
            let intact = (0..<8192).allSatisfy { data.load(fromByteOffset: $0, as: UInt8.self) == Self.pattern($0, round) }
            #expect(intact, "round \(round): data read back differs")
            if round % 5 == 0 {
                #expect(try completePacked(&queue, slot: slot, type: .flush, sector: 0, bytes: 0) == BlkStatus.ok)
            }
        }
        // A batch of every slot at once, harvested together.
        for slot in 0..<ring.slots {
            queue.prepare(slot: slot, type: .read, sector: UInt64(slot) * 16, byteCount: 4096)
            queue.submit(slot: slot)
        }
        _ = queue.publish()
        queue.kick()
        var seen = Set<Int>()
        let deadline = Date().addingTimeInterval(10)
        while seen.count < ring.slots, Date() < deadline {
            let counted = queue.pendingCompletions()
            let pending = try #require(counted)
            for _ in 0..<pending {
                let entry = queue.takeCompletion()
                let slot = try #require(queue.slot(forUsedID: entry.id))
                #expect(queue.status(of: slot) == BlkStatus.ok)
                seen.insert(slot)
            }
            if pending == 0 { usleep(100) }
        }
        #expect(seen.count == ring.slots)
        try frontend.shutdown(finalQueues: [queue])
    }

    @Test(.enabled(if: BackendProcess.Kind.qsd.executable != nil, "qemu-storage-daemon is not installed"))
    func refusesPackedAgainstQSD() throws {
        let backend = try BackendProcess.start(.qsd)
        defer { backend.stop() }
        var options = FrontendOptions(slotsPerQueue: 2)
        options.ringLayout = .packed
        do {
            _ = try VhostUserBlkFrontend(socketPath: backend.socketPath, options: options)
            Issue.record("the frontend accepted a backend without VIRTIO_F_RING_PACKED")
        } catch {
            #expect(error.description.contains("does not offer VIRTIO_F_RING_PACKED"), "\(error)")
        }
    }

    static func pattern(_ i: Int, _ round: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: i &* 13 &+ round &* 29 &+ (i >> 9))
    }
}

/// Submits one request on a packed (or split) queue and polls for its completion (10 s).
func completePacked(_ queue: inout BlkQueue, slot: Int, type: BlkRequestType, sector: UInt64, bytes: Int) throws -> UInt8 {
    queue.prepare(slot: slot, type: type, sector: sector, byteCount: bytes)
    queue.submit(slot: slot)
    _ = queue.publish()
    queue.kick()
    let deadline = Date().addingTimeInterval(10)
    while true {
        guard let pending = queue.pendingCompletions() else { throw FrontendError("backend broke the used ring") }
        if pending > 0 { break }
        guard Date() < deadline else { throw FrontendError("request did not complete within 10 s") }
        usleep(100)
    }
    let entry = queue.takeCompletion()
    guard queue.slot(forUsedID: entry.id) == slot else { throw FrontendError("used id \(entry.id) is not slot \(slot)") }
    return queue.status(of: slot)
}
