import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// A Spindle process is SIGKILLed while half of eight writes are held back (the test-only
/// completion delay: every 2nd completion waits 5 s), so the used ring holds completions out
/// of order. A new process on the same image, reached the way QEMU reconnects (same memory,
/// rings and inflight buffer; SET_VRING_BASE = used.idx), must complete each request exactly
/// once. Without INFLIGHT_SHMFD, the same rewind redoes finished requests and loses others.
@Suite(.serialized, .enabled(if: BackendProcess.Kind.spindle.executable != nil, "spindle is not built"))
struct InflightReconnectTests {
    static let writes = 8

    static func start(image: String, environment: [String: String]) throws -> BackendProcess {
        try BackendProcess.start(.spindle, arguments: { socket in
            ["--blockdev", "driver=file,node-name=n0,filename=\(image)",
             "--export", "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=\(socket),writable=on,num-queues=1"]
        }, environment: environment)
    }

    static func harvest(_ queue: inout BlkQueue, until count: Int, into seen: inout [Int], seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while seen.count < count && Date() < deadline {
            if (queue.ring.pendingUsedCount() ?? 0) > 0 {
                let entry = queue.ring.popUsed()
                seen.append(queue.slot(forUsedID: entry.id) ?? -1)
            } else {
                usleep(500)
            }
        }
    }

    /// Runs the kill-and-reconnect scenario; returns the slots in the order their completions
    /// arrived over both processes, and the image path.
    static func killDuringReorderedWrites(inflight: Bool) throws -> (completions: [Int], image: String) {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("inflight-\(UUID().uuidString).img").path
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        truncate(image, 16 << 20)
        var environment = ["SPINDLE_TEST_DELAY_EVERY": "2", "SPINDLE_TEST_DELAY_MS": "5000"]
        if !inflight { environment["SPINDLE_TEST_NO_INFLIGHT"] = "1" }
        let first = try start(image: image, environment: environment)
        defer { first.stop() }
        var options = FrontendOptions(queueCount: 1, slotsPerQueue: writes, maxRequestBytes: 4096)
        options.inflightTracking = inflight
        let frontend = try VhostUserBlkFrontend(socketPath: first.socketPath, options: options)
        var queue = frontend.queues[0]
        for slot in 0..<writes {
            queue.data(of: slot).initializeMemory(as: UInt8.self, repeating: UInt8(0x30 + slot), count: 4096)
            queue.prepare(slot: slot, type: .write, sector: UInt64(slot) * 8, byteCount: 4096)
            queue.submit(slot: slot)
        }
        _ = queue.ring.publishAvailable()
        queue.kick()
        var completions: [Int] = []
        harvest(&queue, until: writes / 2, into: &completions, seconds: 4)
        #expect(completions.count == writes / 2, "the undelayed half did not complete")

        first.stop()  // SIGKILL with the other half held
        let second = try start(image: image, environment: inflight ? [:] : ["SPINDLE_TEST_NO_INFLIGHT": "1"])
        defer { second.stop() }
        let resumed = try frontend.reconnect(socketPath: second.socketPath, queues: [queue])
        queue.kick()
        harvest(&queue, until: writes, into: &completions, seconds: 10)
        // Anything more arriving would be a request completed twice.
        harvest(&queue, until: writes + 1, into: &completions, seconds: 0.3)
        if inflight {
            #expect(throws: Never.self) { try resumed.shutdown(finalQueues: [queue]) }
        }
        return (completions, image)
    }

    @Test func restartedProcessCompletesEveryInFlightRequestExactlyOnce() throws {
        let (completions, image) = try Self.killDuringReorderedWrites(inflight: true)
        defer { try? FileManager.default.removeItem(atPath: image) }
        #expect(completions.sorted() == Array(0..<Self.writes), "completions over both processes: \(completions)")
        // Completed out of order before the kill: the region, not in-order luck, saved them.
        #expect(completions.prefix(Self.writes / 2).sorted() != Array(0..<Self.writes / 2))
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: image))
        defer { try? file.close() }
        for slot in 0..<Self.writes {
            try file.seek(toOffset: UInt64(slot) * 4096)
            #expect(try file.read(upToCount: 4096) == Data(repeating: UInt8(0x30 + slot), count: 4096), "write \(slot) lost")
        }
    }

    @Test func withoutInflightTrackingTheRewindRedoesAndLosesRequests() throws {
        let (completions, image) = try Self.killDuringReorderedWrites(inflight: false)
        defer { try? FileManager.default.removeItem(atPath: image) }
        // QEMU's fallback restarts at used.idx: finished requests run again, held ones never do.
        #expect(completions.sorted() != Array(0..<Self.writes), "completions over both processes: \(completions)")
        print("without inflight tracking, completions over both processes: \(completions)")
    }
}
