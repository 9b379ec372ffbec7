import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// 200 frontend lifecycles against one Spindle process: connect, negotiate (with an inflight
/// buffer, as QEMU does), share memory, start the ring, do I/O, then leave either cleanly
/// (GET_VRING_BASE) or abruptly (the socket just closes, as when QEMU crashes). The daemon's
/// file descriptors and memory mappings must come back to where they were, and its resident
/// memory must stay flat.
@Suite(.serialized, .enabled(if: BackendProcess.Kind.spindle.executable != nil, "spindle is not built"))
struct ConnectionLeakTests {
    struct Usage: CustomStringConvertible {
        var fds: Int
        var maps: Int
        var rssKiB: Int
        var description: String { "\(fds) fds, \(maps) mappings, \(rssKiB) KiB resident" }
    }

    static func usage(of pid: Int32) throws -> Usage {
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8).split(separator: "\n").count
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let rssLine = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        let rss = Int(rssLine.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? -1
        return Usage(fds: fds, maps: maps, rssKiB: rss)
    }

    /// One frontend lifetime; `clean` ends it with GET_VRING_BASE, otherwise the socket just closes.
    static func cycle(_ socket: String, clean: Bool) throws {
        var options = FrontendOptions(queueCount: 1, slotsPerQueue: 4, maxRequestBytes: 8192)
        options.inflightTracking = true
        // A connection made while the last one is still being torn down is held, not refused;
        // the retry stays for a daemon under load.
        var attempt = 0
        var connected: VhostUserBlkFrontend?
        while connected == nil {
            do {
                connected = try VhostUserBlkFrontend(socketPath: socket, options: options)
            } catch {
                attempt += 1
                if attempt >= 250 { throw error }
                usleep(20_000)
            }
        }
        guard let frontend = connected else { return }
        var queue = frontend.queues[0]
        for (slot, type) in [(0, BlkRequestType.write), (1, .read), (2, .flush)] {
            queue.prepare(slot: slot, type: type, sector: UInt64(slot) * 16, byteCount: type == .flush ? 0 : 4096)
            queue.submit(slot: slot)
        }
        _ = queue.ring.publishAvailable()
        queue.kick()
        let deadline = Date().addingTimeInterval(5)
        var completed = 0
        while completed < 3 {
            guard Date() < deadline else { throw FrontendError("requests did not complete within 5 s") }
            if (queue.ring.pendingUsedCount() ?? 0) > 0 {
                _ = queue.ring.popUsed()
                completed += 1
            } else {
                usleep(100)
            }
        }
        if clean { try frontend.shutdown(finalQueues: [queue]) }
    }

    /// The daemon with no frontend: the lowest fd and mapping counts seen over a second (it
    /// tears the last connection down asynchronously, in milliseconds).
    static func idle(_ pid: Int32) throws -> Usage {
        var lowest = try usage(of: pid)
        for _ in 0..<20 {
            usleep(50_000)
            let now = try usage(of: pid)
            if now.fds < lowest.fds || (now.fds == lowest.fds && now.maps < lowest.maps) { lowest = now }
        }
        return lowest
    }

    /// Waits (10 s at most) for the daemon to come back to `baseline` after the last connection.
    static func settled(_ pid: Int32, like baseline: Usage) throws -> Usage {
        let deadline = Date().addingTimeInterval(10)
        var now = try usage(of: pid)
        while (now.fds > baseline.fds || now.maps > baseline.maps) && Date() < deadline {
            usleep(50_000)
            now = try usage(of: pid)
        }
        return now
    }

    @Test func twoHundredConnectDisconnectCyclesLeakNothing() throws {
        let backend = try BackendProcess.start(.spindle)
        defer { backend.stop() }
        let pid = backend.process.processIdentifier
        // Warm up: first-use allocations (IOThread rings, slot arrays, log buffers) are not leaks.
        for i in 0..<10 { try Self.cycle(backend.socketPath, clean: i % 2 == 0) }
        let baseline = try Self.idle(pid)
        for i in 0..<200 { try Self.cycle(backend.socketPath, clean: i % 2 == 0) }
        let after = try Self.settled(pid, like: baseline)
        print("spindle before: \(baseline); after 200 cycles: \(after)")
        #expect(after.fds == baseline.fds, "file descriptors leaked: \(baseline) -> \(after)")
        #expect(after.maps == baseline.maps, "memory mappings leaked: \(baseline) -> \(after)")
        // Allocator noise is fine; a per-connection leak of guest memory or slots is not.
        #expect(after.rssKiB - baseline.rssKiB < 2048, "resident memory grew: \(baseline) -> \(after)")
        #expect(backend.process.isRunning)
    }
}
