import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// Rings set up with SET_VRING_KICK's NOFD flag (no kick eventfd): Spindle polls them on
/// their IOThread, so requests complete although the frontend never kicks.
@Suite(.serialized, .enabled(if: BackendProcess.Kind.available.contains(.spindle), "spindle is not built"))
struct KicklessRingTests {
    @Test func aKicklessRingIsServedByPollingStoppedAndStartedAgain() throws {
        let backend = try BackendProcess.start(.spindle)
        defer { backend.stop() }
        var options = FrontendOptions(queueCount: 1, slotsPerQueue: 4, maxRequestBytes: 8192)
        options.kicklessRings = true
        for round in 0..<2 {
            let frontend = try connect(backend.socketPath, options: options)
            var queue = frontend.queues[0]
            for slot in 0..<4 {
                // Long after the IOThread's busy-poll window closed: only the timer finds it.
                if slot == 2 { usleep(50_000) }
                queue.data(of: slot).initializeMemory(as: UInt8.self, repeating: 0xA5, count: 4096)
                let status = try completeWithoutKick(&queue, slot: slot, sector: UInt64(slot + round) * 8)
                #expect(status == BlkStatus.ok, "round \(round), slot \(slot)")
                #expect(UnsafeRawBufferPointer(start: queue.data(of: slot), count: 4096).allSatisfy { $0 == 0 })
            }
            if round == 0 {
                // An idle kick-less ring costs timer wakeups, not a spinning thread.
                let before = cpuSeconds(of: backend.process.processIdentifier)
                usleep(1_000_000)
                let used = cpuSeconds(of: backend.process.processIdentifier) - before
                print("spindle's CPU time over 1 s with an idle kick-less ring: \(used) s")
                #expect(used < 0.5)
            }
            // SET_VRING_ENABLE 0 and GET_VRING_BASE: the polled ring stops and reports base 4.
            try frontend.shutdown(finalQueues: [queue])
        }
    }

    /// utime + stime of a process, from /proc (clock ticks of 10 ms).
    func cpuSeconds(of pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        // After the name: state is field 3, utime 14, stime 15.
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The previous connection's teardown may still be under way: retry for up to 2 s.
    func connect(_ path: String, options: FrontendOptions) throws -> VhostUserBlkFrontend {
        let deadline = Date().addingTimeInterval(2)
        while true {
            do {
                return try VhostUserBlkFrontend(socketPath: path, options: options)
            } catch {
                guard Date() < deadline else { throw error }
                usleep(20_000)
            }
        }
    }

    /// Publishes one read and waits (5 s at most) for its used entry, never kicking.
    func completeWithoutKick(_ queue: inout BlkQueue, slot: Int, sector: UInt64) throws -> UInt8 {
        queue.prepare(slot: slot, type: .read, sector: sector, byteCount: 4096)
        queue.submit(slot: slot)
        _ = queue.ring.publishAvailable()
        let deadline = Date().addingTimeInterval(5)
        while queue.ring.pendingUsedCount() == 0 {
            guard Date() < deadline else { throw FrontendError("a request on a kick-less ring did not complete within 5 s") }
            usleep(100)
        }
        let entry = queue.ring.popUsed()
        #expect(queue.slot(forUsedID: entry.id) == slot)
        return queue.status(of: slot)
    }
}
