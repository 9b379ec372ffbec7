import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// A Spindle process is SIGKILLed while half of eight writes are held back (an x-delay filter
/// node, test only: every 2nd completion waits 5 s), so the used ring holds completions out
/// of order. A new process on the same image, reached the way QEMU reconnects (same memory,
/// rings and inflight buffer; SET_VRING_BASE = used.idx), must complete each request exactly
/// once. Without INFLIGHT_SHMFD, the same rewind redoes finished requests and loses others.
@Suite(.serialized, .enabled(if: BackendProcess.Kind.spindle.executable != nil, "spindle is not built"))
struct InflightReconnectTests {
    static let writes = 8

    /// `holdEvery`: export an x-delay node over the image that holds every Nth completion 5 s.
    /// `inflight: false`: withhold INFLIGHT_SHMFD (the export's x-inflight=off).
    static func start(image: String, queues: Int, holdEvery: Int? = nil, inflight: Bool) throws -> BackendProcess {
        try BackendProcess.start(.spindle, arguments: { socket in
            var arguments = ["--blockdev", "driver=file,node-name=n0,filename=\(image)"]
            if let holdEvery { arguments += ["--blockdev", "driver=x-delay,node-name=held,file=n0,hold-every=\(holdEvery),hold-ms=5000"] }
            return arguments + ["--export", "type=vhost-user-blk,id=e0,node-name=\(holdEvery == nil ? "n0" : "held"),addr.type=unix,"
                + "addr.path=\(socket),writable=on,num-queues=\(queues),x-inflight=\(inflight ? "on" : "off")"]
        })
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

    static func pattern(queue: Int, slot: Int) -> UInt8 { UInt8(0x30 + queue * 16 + slot) }

    /// Runs the kill-and-reconnect scenario with `writes` writes on each of `queueCount`
    /// queues; returns, per queue, the slots in the order their completions arrived over
    /// both processes, and the image path.
    static func killDuringReorderedWrites(inflight: Bool, queueCount: Int = 1) throws -> (completions: [[Int]], image: String) {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("inflight-\(UUID().uuidString).img").path
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        truncate(image, 16 << 20)
        let first = try start(image: image, queues: queueCount, holdEvery: 2, inflight: inflight)
        defer { first.stop() }
        var options = FrontendOptions(queueCount: queueCount, slotsPerQueue: writes, maxRequestBytes: 4096)
        options.inflightTracking = inflight
        let frontend = try VhostUserBlkFrontend(socketPath: first.socketPath, options: options)
        var queues = frontend.queues
        var completions = Array(repeating: [Int](), count: queueCount)
        // One queue after the other: the filter counts completions over the whole node, so
        // each queue's writes must be counted before the next queue's begin.
        for q in queues.indices {
            for slot in 0..<writes {
                queues[q].data(of: slot).initializeMemory(as: UInt8.self, repeating: pattern(queue: q, slot: slot), count: 4096)
                queues[q].prepare(slot: slot, type: .write, sector: UInt64(q * writes + slot) * 8, byteCount: 4096)
                queues[q].submit(slot: slot)
            }
            _ = queues[q].ring.publishAvailable()
            queues[q].kick()
            harvest(&queues[q], until: writes / 2, into: &completions[q], seconds: 4)
            #expect(completions[q].count == writes / 2, "queue \(q): the undelayed half did not complete")
            usleep(200_000)  // the last write's completion (a held one) is counted, too
        }

        first.stop()  // SIGKILL with the other half held
        let second = try start(image: image, queues: queueCount, inflight: inflight)
        defer { second.stop() }
        let resumed = try frontend.reconnect(socketPath: second.socketPath, queues: queues)
        for q in queues.indices {
            queues[q].kick()
            harvest(&queues[q], until: writes, into: &completions[q], seconds: 10)
            // Anything more arriving would be a request completed twice.
            harvest(&queues[q], until: writes + 1, into: &completions[q], seconds: 0.3)
        }
        if inflight {
            #expect(throws: Never.self) { try resumed.shutdown(finalQueues: queues) }
        }
        return (completions, image)
    }

    @Test(arguments: [1, 2])
    func restartedProcessCompletesEveryInFlightRequestExactlyOnce(queues: Int) throws {
        let (completions, image) = try Self.killDuringReorderedWrites(inflight: true, queueCount: queues)
        defer { try? FileManager.default.removeItem(atPath: image) }
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: image))
        defer { try? file.close() }
        for q in 0..<queues {
            #expect(completions[q].sorted() == Array(0..<Self.writes), "queue \(q), completions over both processes: \(completions[q])")
            // Completed out of order before the kill: the region, not in-order luck, saved them.
            #expect(completions[q].prefix(Self.writes / 2).sorted() != Array(0..<Self.writes / 2))
            for slot in 0..<Self.writes {
                try file.seek(toOffset: UInt64(q * Self.writes + slot) * 4096)
                #expect(try file.read(upToCount: 4096) == Data(repeating: Self.pattern(queue: q, slot: slot), count: 4096),
                        "queue \(q) write \(slot) lost")
            }
        }
    }

    @Test func withoutInflightTrackingTheRewindRedoesAndLosesRequests() throws {
        let (completions, image) = try Self.killDuringReorderedWrites(inflight: false)
        defer { try? FileManager.default.removeItem(atPath: image) }
        // QEMU's fallback restarts at used.idx: finished requests run again, held ones never do.
        #expect(completions[0].sorted() != Array(0..<Self.writes), "completions over both processes: \(completions[0])")
        print("without inflight tracking, completions over both processes: \(completions[0])")
    }
}
