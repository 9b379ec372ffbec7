import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// The frontend against Debian's qemu-storage-daemon (a null-co export that reads zeroes):
/// proves it follows the spec rather than only Spindle's reading of it.
@Suite(.serialized, .enabled(if: QSD.path != nil, "qemu-storage-daemon is not installed"))
struct QSDIntegrationTests {
    @Test(arguments: [(eventIndex: true, indirect: false), (eventIndex: false, indirect: true)])
    func readsWritesAndTeardown(eventIndex: Bool, indirect: Bool) throws {
        let qsd = try QSD.start()
        defer { qsd.stop() }
        let options = FrontendOptions(queueCount: 1, slotsPerQueue: 4, maxRequestBytes: 8192,
                                      eventIndex: eventIndex, indirectDescriptors: indirect)
        let frontend = try VhostUserBlkFrontend(socketPath: qsd.socketPath, options: options)
        #expect(frontend.config?.capacityBytes == 64 << 20)
        #expect(frontend.protocolFeatures.contains(.replyAck))
        var queue = frontend.queues[0]

        // Writes succeed; null-co drops the data.
        queue.data(of: 0).initializeMemory(as: UInt8.self, repeating: 0x5A, count: 8192)
        let written = try complete(&queue, slot: 0, type: .write, sector: 16, bytes: 8192)
        #expect(written == BlkStatus.ok)
        // Reads of zeroes overwrite a poisoned buffer.
        for slot in 0..<4 {
            queue.data(of: slot).initializeMemory(as: UInt8.self, repeating: 0xA5, count: 8192)
            let status = try complete(&queue, slot: slot, type: .read, sector: UInt64(slot) * 64, bytes: 4096)
            #expect(status == BlkStatus.ok)
            let bytes = UnsafeRawBufferPointer(start: queue.data(of: slot), count: 4096)
            #expect(bytes.allSatisfy { $0 == 0 }, "slot \(slot) did not read zeroes")
            #expect(queue.data(of: slot).load(fromByteOffset: 4096, as: UInt8.self) == 0xA5)  // past the request
        }
        let flushed = try complete(&queue, slot: 1, type: .flush, sector: 0, bytes: 0)
        #expect(flushed == BlkStatus.ok)
        // Past the end of the disk: an I/O error, not a hang.
        let pastTheEnd = try complete(&queue, slot: 2, type: .read, sector: (64 << 20) / 512, bytes: 4096)
        #expect(pastTheEnd == BlkStatus.ioError)
        try frontend.shutdown(finalQueues: [queue])
    }

    @Test func teardownNoticesAWrongBase() throws {
        let qsd = try QSD.start()
        defer { qsd.stop() }
        let frontend = try VhostUserBlkFrontend(socketPath: qsd.socketPath, options: FrontendOptions(slotsPerQueue: 2))
        var queue = frontend.queues[0]
        let status = try complete(&queue, slot: 0, type: .read, sector: 0, bytes: 4096)
        #expect(status == BlkStatus.ok)
        // Pretend the driver never published anything: the backend's base (1) must not match.
        #expect(throws: FrontendError.self) { try frontend.shutdown(finalQueues: [frontend.queues[0]]) }
    }

    @Test func refusesMoreQueuesThanTheBackendHas() throws {
        let qsd = try QSD.start()
        defer { qsd.stop() }
        #expect(throws: FrontendError.self) {
            _ = try VhostUserBlkFrontend(socketPath: qsd.socketPath, options: FrontendOptions(queueCount: 4))
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

/// A qemu-storage-daemon with a 64 MiB null-co export on a socket in a fresh directory.
struct QSD {
    static let path: String? = ["/usr/bin/qemu-storage-daemon", "/usr/local/bin/qemu-storage-daemon"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    let process: Process
    let directory: URL
    var socketPath: String { directory.appendingPathComponent("qsd.sock").path }

    static func start() throws -> QSD {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("frontend-qsd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path!)
        let socket = directory.appendingPathComponent("qsd.sock").path
        process.arguments = [
            "--blockdev", "driver=null-co,node-name=n0,size=67108864,read-zeroes=on",
            "--export", "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=\(socket),writable=on",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let qsd = QSD(process: process, directory: directory)
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: socket) {
            guard process.isRunning, Date() < deadline else {
                qsd.stop()
                throw FrontendError("qemu-storage-daemon did not create its socket")
            }
            usleep(10_000)
        }
        return qsd
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}
