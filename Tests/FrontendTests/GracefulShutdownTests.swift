import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// SIGTERM or SIGINT while requests are in flight: Spindle stops, completes what it took (an x-delay
/// filter node holds every other completion back, so some are surely in flight), flushes the image,
/// removes its socket and pid file and exits 0; the data of every completed write is on disk.
@Suite(.serialized, .enabled(if: BackendProcess.Kind.spindle.executable != nil, "spindle is not built"))
struct GracefulShutdownTests {
    @Test(arguments: [SIGTERM, SIGINT])
    func stopSignalDuringWritesCompletesThemAndCleansUp(signal: Int32) throws {
        let slots = 8
        var image = ""
        var pidfile = ""
        let backend = try BackendProcess.start(.spindle, arguments: { socket in
            let directory = URL(fileURLWithPath: socket).deletingLastPathComponent()
            image = directory.appendingPathComponent("disk.img").path
            pidfile = directory.appendingPathComponent("spindle.pid").path
            _ = FileManager.default.createFile(atPath: image, contents: nil)
            truncate(image, 16 << 20)
            return ["--blockdev", "driver=file,node-name=n0,filename=\(image)",
                    "--blockdev", "driver=x-delay,node-name=held,file=n0,hold-every=2,hold-ms=300",
                    "--export", "type=vhost-user-blk,id=e0,node-name=held,addr.type=unix,addr.path=\(socket),writable=on,num-queues=1",
                    "--pidfile", pidfile]
        })
        defer { backend.stop() }
        // The pid file is written after the socket: wait for it too.
        let ready = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: pidfile) && Date() < ready { usleep(10_000) }
        #expect(FileManager.default.fileExists(atPath: pidfile))

        let frontend = try VhostUserBlkFrontend(socketPath: backend.socketPath,
                                                options: FrontendOptions(queueCount: 1, slotsPerQueue: slots, maxRequestBytes: 4096))
        var queue = frontend.queues[0]
        for slot in 0..<slots {
            queue.data(of: slot).initializeMemory(as: UInt8.self, repeating: UInt8(0x40 + slot), count: 4096)
            queue.prepare(slot: slot, type: .write, sector: UInt64(slot) * 8, byteCount: 4096)
            queue.submit(slot: slot)
        }
        _ = queue.ring.publishAvailable()
        queue.kick()
        // Wait until some completed (so the rest are taken and held), then stop the daemon.
        let started = Date().addingTimeInterval(5)
        while (queue.ring.pendingUsedCount() ?? 0) == 0 && Date() < started { usleep(1000) }
        #expect((queue.ring.pendingUsedCount() ?? 0) > 0)
        kill(backend.process.processIdentifier, signal)
        backend.process.waitUntilExit()
        #expect(backend.process.terminationReason == .exit)
        #expect(backend.process.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: backend.socketPath), "socket left behind")
        #expect(!FileManager.default.fileExists(atPath: pidfile), "pid file left behind")

        // Every request was answered before the daemon went away, each with a status.
        var answered: [Int] = []
        while (queue.ring.pendingUsedCount() ?? 0) > 0 {
            let entry = queue.ring.popUsed()
            if let slot = queue.slot(forUsedID: entry.id) { answered.append(slot) }
        }
        #expect(answered.sorted() == Array(0..<slots))
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: image))
        defer { try? file.close() }
        for slot in answered where queue.status(of: slot) == BlkStatus.ok {
            try file.seek(toOffset: UInt64(slot) * 4096)
            let bytes = try file.read(upToCount: 4096) ?? Data()
            #expect(bytes == Data(repeating: UInt8(0x40 + slot), count: 4096), "write of slot \(slot) is not in the image")
        }
    }
}
