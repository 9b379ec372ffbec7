import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// Durability seen from the block layer: Spindle exports a loop device, whose
/// /sys/block/loopN/stat counts the cache flushes the kernel sent it (fdatasync and
/// RWF_DSYNC writes on a block device both end in one). A virtio FLUSH must have reached the
/// device when it completes; with `writethrough=on` (the guest is told there is no write
/// cache) every write must. Needs root and a free loop device; skipped otherwise.
@Suite(.serialized, .enabled(if: BackendProcess.Kind.spindle.executable != nil && getuid() == 0
                                 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/losetup"),
                             "needs spindle, root and losetup"))
struct DurabilityTests {
    /// A loop device over a fresh 16 MiB file; detached and removed by `detach()`.
    struct LoopDevice {
        let path: String
        let backingFile: String

        init() throws {
            backingFile = FileManager.default.temporaryDirectory.appendingPathComponent("durability-\(UUID().uuidString).img").path
            _ = FileManager.default.createFile(atPath: backingFile, contents: nil)
            truncate(backingFile, 16 << 20)
            let (status, output) = Self.run(["-f", "--show", backingFile])
            guard status == 0, output.hasPrefix("/dev/loop") else {
                try? FileManager.default.removeItem(atPath: backingFile)
                throw FrontendError("losetup failed (\(status)): \(output)")
            }
            path = output
        }

        /// Flush requests the device has completed (field 16 of the block stat file).
        var flushes: Int {
            let name = URL(fileURLWithPath: path).lastPathComponent
            let stat = (try? String(contentsOfFile: "/sys/block/\(name)/stat", encoding: .utf8)) ?? ""
            let fields = stat.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count > 15 ? Int(fields[15]) ?? -1 : -1
        }

        func detach() {
            _ = Self.run(["-d", path])
            try? FileManager.default.removeItem(atPath: backingFile)
        }

        static func run(_ arguments: [String]) -> (Int32, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/losetup")
            process.arguments = arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            do { try process.run() } catch { return (-1, "\(error)") }
            process.waitUntilExit()
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            return (process.terminationStatus, text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    static func complete(_ queue: inout BlkQueue, slot: Int, type: BlkRequestType, sector: UInt64) throws -> UInt8 {
        queue.prepare(slot: slot, type: type, sector: sector, byteCount: type == .flush ? 0 : 4096)
        queue.submit(slot: slot)
        _ = queue.ring.publishAvailable()
        queue.kick()
        let deadline = Date().addingTimeInterval(5)
        while (queue.ring.pendingUsedCount() ?? 0) == 0 {
            guard Date() < deadline else { throw FrontendError("request did not complete within 5 s") }
            usleep(100)
        }
        _ = queue.ring.popUsed()
        return queue.status(of: slot)
    }

    static func session(on device: LoopDevice, writethrough: Bool, _ body: (inout BlkQueue) throws -> Void) throws {
        let backend = try BackendProcess.start(.spindle, arguments: { socket in
            ["--blockdev", "driver=file,node-name=n0,filename=\(device.path)",
             "--export", "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=\(socket),writable=on,"
                + "num-queues=1,writethrough=\(writethrough ? "on" : "off")"]
        })
        defer { backend.stop() }
        let frontend = try VhostUserBlkFrontend(socketPath: backend.socketPath,
                                                options: FrontendOptions(queueCount: 1, slotsPerQueue: 2, maxRequestBytes: 4096))
        var queue = frontend.queues[0]
        try body(&queue)
        try frontend.shutdown(finalQueues: [queue])
    }

    @Test func flushReachesTheDeviceBeforeItCompletes() throws {
        let device = try LoopDevice()
        defer { device.detach() }
        try Self.session(on: device, writethrough: false) { queue in
            let before = device.flushes
            for i in 0..<8 {
                let status = try Self.complete(&queue, slot: 0, type: .write, sector: UInt64(i) * 8)
                #expect(status == BlkStatus.ok)
            }
            let afterWrites = device.flushes
            // With a write cache, writes are not flushed one by one (that is the point of it).
            #expect(afterWrites - before < 8, "cached writes were flushed: \(before) -> \(afterWrites)")
            let flushed = try Self.complete(&queue, slot: 1, type: .flush, sector: 0)
            #expect(flushed == BlkStatus.ok)
            #expect(device.flushes > afterWrites, "FLUSH completed but the device saw no flush")
        }
    }

    @Test func writethroughMakesEveryWriteDurableBeforeItCompletes() throws {
        let device = try LoopDevice()
        defer { device.detach() }
        try Self.session(on: device, writethrough: true) { queue in
            for i in 0..<4 {
                let before = device.flushes
                let status = try Self.complete(&queue, slot: 0, type: .write, sector: UInt64(i) * 8)
                #expect(status == BlkStatus.ok)
                #expect(device.flushes > before, "write \(i) completed before the device flushed it")
            }
        }
    }
}
