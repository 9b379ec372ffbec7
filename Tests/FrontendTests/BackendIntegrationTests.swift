import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// The frontend against real backends: Debian's qemu-storage-daemon (proves it follows the
/// spec rather than only Spindle's reading of it) and Spindle's own binary when it has been
/// built. Each backend serves a null-co node that reads zeroes; a missing one is skipped.
@Suite(.serialized, .enabled(if: !BackendProcess.Kind.available.isEmpty, "neither qemu-storage-daemon nor spindle is available"))
struct BackendIntegrationTests {
    static let ringVariants = [(eventIndex: true, indirect: false), (eventIndex: false, indirect: true)]

    @Test(arguments: BackendProcess.Kind.available, ringVariants)
    func readsWritesAndTeardown(backend kind: BackendProcess.Kind, ring: (eventIndex: Bool, indirect: Bool)) throws {
        let backend = try BackendProcess.start(kind)
        defer { backend.stop() }
        let options = FrontendOptions(queueCount: 1, slotsPerQueue: 4, maxRequestBytes: 8192,
                                      eventIndex: ring.eventIndex, indirectDescriptors: ring.indirect)
        let frontend = try VhostUserBlkFrontend(socketPath: backend.socketPath, options: options)
        #expect(frontend.config?.capacityBytes == BackendProcess.capacity)
        #expect(frontend.protocolFeatures.contains(.replyAck))
        var queue = frontend.queues[0]

        // Writes succeed; null-co drops the data.
        queue.data(of: 0).initializeMemory(as: UInt8.self, repeating: 0x5A, count: 8192)
        let written = try complete(&queue, slot: 0, type: .write, sector: 16, bytes: 8192)
        #expect(written == BlkStatus.ok)
        // Reads of zeroes overwrite a poisoned buffer, and nothing past the request.
        for slot in 0..<4 {
            queue.data(of: slot).initializeMemory(as: UInt8.self, repeating: 0xA5, count: 8192)
            let status = try complete(&queue, slot: slot, type: .read, sector: UInt64(slot) * 64, bytes: 4096)
            #expect(status == BlkStatus.ok)
            let bytes = UnsafeRawBufferPointer(start: queue.data(of: slot), count: 4096)
            #expect(bytes.allSatisfy { $0 == 0 }, "slot \(slot) did not read zeroes")
            #expect(queue.data(of: slot).load(fromByteOffset: 4096, as: UInt8.self) == 0xA5)
        }
        let flushed = try complete(&queue, slot: 1, type: .flush, sector: 0, bytes: 0)
        #expect(flushed == BlkStatus.ok)
        // Past the end of the disk: an I/O error, not a hang.
        let pastTheEnd = try complete(&queue, slot: 2, type: .read, sector: BackendProcess.capacity / 512, bytes: 4096)
        #expect(pastTheEnd == BlkStatus.ioError)
        try frontend.shutdown(finalQueues: [queue])
    }

    @Test(arguments: BackendProcess.Kind.available)
    func teardownNoticesAWrongBase(backend kind: BackendProcess.Kind) throws {
        let backend = try BackendProcess.start(kind)
        defer { backend.stop() }
        let frontend = try VhostUserBlkFrontend(socketPath: backend.socketPath, options: FrontendOptions(slotsPerQueue: 2))
        var queue = frontend.queues[0]
        let status = try complete(&queue, slot: 0, type: .read, sector: 0, bytes: 4096)
        #expect(status == BlkStatus.ok)
        // Pretend the driver never published anything: the backend's base (1) must not match.
        #expect(throws: FrontendError.self) { try frontend.shutdown(finalQueues: [frontend.queues[0]]) }
    }

    @Test(arguments: BackendProcess.Kind.available)
    func refusesMoreQueuesThanTheBackendHas(backend kind: BackendProcess.Kind) throws {
        let backend = try BackendProcess.start(kind)
        defer { backend.stop() }
        #expect(throws: FrontendError.self) {
            _ = try VhostUserBlkFrontend(socketPath: backend.socketPath, options: FrontendOptions(queueCount: 4))
        }
    }

    /// Submits one request and polls the used ring for it (5 s at most).
    func complete(_ queue: inout BlkQueue, slot: Int, type: BlkRequestType, sector: UInt64, bytes: Int) throws -> UInt8 {
        queue.prepare(slot: slot, type: type, sector: sector, byteCount: bytes)
        queue.submit(slot: slot)
        _ = queue.ring.publishAvailable()
        queue.kick()  // unconditional: the test does not depend on kick suppression
        let deadline = Date().addingTimeInterval(5)
        while queue.ring.pendingUsedCount() == 0 {
            guard Date() < deadline else { throw FrontendError("request did not complete within 5 s") }
            usleep(100)
        }
        let entry = queue.ring.popUsed()
        #expect(queue.slot(forUsedID: entry.id) == slot)
        return queue.status(of: slot)
    }
}
