import Foundation
import Testing
import CSpindle
import VhostUser
@testable import VhostUserFrontend

/// A frontend that hangs up and connects again at once is served, as soon as the daemon has
/// torn its previous connection down; a second frontend while the first is still connected
/// is refused at once. Against the two-export daemon, whose other export keeps the shared
/// IOThread busy with a well-behaved frontend meanwhile.
@Suite(.serialized, .enabled(if: TwoExportDaemon.executable != nil, "spindle is not built"))
struct ReconnectTests {
    static let slots = 4

    /// The victim frontend's driver state across its connections: which slots are in flight,
    /// and what went wrong.
    struct Driver {
        var frontend: VhostUserBlkFrontend
        var queue: BlkQueue
        var outstanding: Set<Int> = []
        var submitted = 0
        var completed = 0
        var inFlightAtHangUp = 0
        var problems: [String] = []

        init(socket: String) throws {
            var options = FrontendOptions(queueCount: 1, slotsPerQueue: ReconnectTests.slots, maxRequestBytes: 4096)
            options.inflightTracking = true
            frontend = try VhostUserBlkFrontend(socketPath: socket, options: options)
            queue = frontend.queues[0]
        }

        /// Takes every completion there is; one for a slot not in flight is a request
        /// completed twice.
        mutating func harvest() {
            while (queue.ring.pendingUsedCount() ?? 0) > 0 {
                let entry = queue.ring.popUsed()
                guard let slot = queue.slot(forUsedID: entry.id), outstanding.remove(slot) != nil else {
                    problems.append("used id \(entry.id) completed but nothing was in flight there")
                    continue
                }
                if queue.status(of: slot) != BlkStatus.ok { problems.append("slot \(slot): status \(queue.status(of: slot))") }
                completed += 1
            }
        }

        /// Puts a write or read in every free slot and kicks.
        mutating func submitAll() {
            for slot in 0..<ReconnectTests.slots where !outstanding.contains(slot) {
                queue.prepare(slot: slot, type: submitted % 2 == 0 ? .write : .read, sector: UInt64(slot) * 8, byteCount: 4096)
                queue.submit(slot: slot)
                outstanding.insert(slot)
                submitted += 1
            }
            _ = queue.ring.publishAvailable()
            queue.kick()
        }

        /// Submits, hangs up with the requests in flight and reconnects at once (same memory,
        /// rings and inflight buffer, as QEMU does).
        mutating func cycle(socket: String) throws {
            submitAll()
            harvest()
            if !outstanding.isEmpty { inFlightAtHangUp += 1 }
            frontend.hangUp()
            frontend = try frontend.reconnect(socketPath: socket, queues: [queue])
            queue.kick()
            harvest()
        }

        /// Waits for everything in flight, watches a moment longer for completions that must
        /// not come, then stops the ring cleanly (GET_VRING_BASE must equal what was made
        /// available: nothing lost).
        mutating func finish() throws {
            let deadline = Date().addingTimeInterval(10)
            while !outstanding.isEmpty && Date() < deadline {
                harvest()
                usleep(200)
            }
            if !outstanding.isEmpty { problems.append("slots \(outstanding.sorted()) never completed") }
            usleep(300_000)
            harvest()
            try frontend.shutdown(finalQueues: [queue])
        }
    }

    @Test func frontendReconnectingAtOnceIsServedEveryTime() throws {
        let daemon = try TwoExportDaemon.start()
        defer { daemon.stop() }
        let bystander = try Bystander.running(on: daemon)
        defer { bystander.stop() }
        let pid = daemon.process.processIdentifier

        // Warm up: first-use allocations are not leaks.
        do {
            var warmup = try Driver(socket: daemon.victimSocket)
            for _ in 0..<20 { try warmup.cycle(socket: daemon.victimSocket) }
            try warmup.finish()
            #expect(warmup.problems.isEmpty, "warm-up: \(warmup.problems)")
        }
        let baseline = try ConnectionLeakTests.idle(pid)

        let started = Date()
        let cycles = 500
        do {
            var driver = try Driver(socket: daemon.victimSocket)
            for _ in 0..<cycles { try driver.cycle(socket: daemon.victimSocket) }
            try driver.finish()
            let seconds = Date().timeIntervalSince(started)
            #expect(driver.problems.isEmpty, "\(driver.problems.prefix(10))")
            #expect(driver.completed == driver.submitted, "\(driver.submitted) submitted, \(driver.completed) completed")
            #expect(driver.inFlightAtHangUp > 0, "no hang-up had requests in flight")
            print("\(cycles) reconnects in \(String(format: "%.1f", seconds)) s; \(driver.submitted) requests, "
                  + "\(driver.inFlightAtHangUp) hang-ups with requests in flight")
        }
        do {  // a fresh frontend right after the last one closed is served at once, too
            var fresh = try Driver(socket: daemon.victimSocket)
            try fresh.finish()
        }

        let after = try ConnectionLeakTests.settled(pid, like: baseline)
        print("spindle before: \(baseline); after \(cycles) reconnects: \(after)")
        #expect(after.fds == baseline.fds, "file descriptors leaked: \(baseline) -> \(after)")
        #expect(after.rssKiB - baseline.rssKiB < 2048, "resident memory grew: \(baseline) -> \(after)")
        #expect(!daemon.log.contains("refusing"), "a reconnect was refused")
        #expect(bystander.failures.isEmpty, "bystander: \(bystander.failures)")
        #expect(daemon.isRunning)
    }

    @Test func secondFrontendIsRefusedAtOnceWhileTheFirstIsConnected() throws {
        let daemon = try TwoExportDaemon.start()
        defer { daemon.stop() }
        let first = try VhostUserBlkFrontend(socketPath: daemon.victimSocket, options: FrontendOptions(slotsPerQueue: 2))
        var queue = first.queues[0]
        #expect(try completeRequest(&queue, slot: 0, type: .write, sector: 0, bytes: 4096) == BlkStatus.ok)

        let started = Date()
        #expect(throws: FrontendError.self) {
            _ = try VhostUserBlkFrontend(socketPath: daemon.victimSocket, options: FrontendOptions(slotsPerQueue: 2))
        }
        #expect(Date().timeIntervalSince(started) < 1, "the second frontend was not refused at once")
        #expect(daemon.waitForLog("refusing a second frontend connection: export victim already has one"))

        #expect(first.waitForBackendFailure(milliseconds: 100) == nil)
        for i in 0..<50 {
            #expect(try completeRequest(&queue, slot: i % 2, type: i % 2 == 0 ? .write : .read, sector: UInt64(i) * 8, bytes: 4096) == BlkStatus.ok)
        }
        #expect(throws: Never.self) { try first.shutdown(finalQueues: [queue]) }
    }

    /// The daemon's fds come back to where they were after it closed a frontend's connection
    /// for a corrupt ring, while that frontend still holds its end and its eventfds.
    @Test func corruptRingDisconnectReleasesEveryDescriptor() throws {
        let daemon = try TwoExportDaemon.start()
        defer { daemon.stop() }
        // The shared IOThread (its epoll, eventfd and timerfd) starts with the first queue it
        // serves: the bystander starts it before the baseline is taken.
        let bystander = try Bystander.running(on: daemon)
        defer { bystander.stop() }
        let pid = daemon.process.processIdentifier
        // One ordinary connection first: the first one starts Swift's global concurrent
        // executor (libdispatch: an epoll, an eventfd and a timerfd, once per process). Those
        // are the descriptors that stayed after the first disconnect; they are not per
        // connection.
        do {
            let first = try VhostUserBlkFrontend(socketPath: daemon.victimSocket, options: FrontendOptions(slotsPerQueue: 2))
            var queue = first.queues[0]
            #expect(try completeRequest(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)
        }
        let baseline = try ConnectionLeakTests.idle(pid)
        let before = Self.descriptors(of: pid)

        for round in 0..<3 {  // bounded: every round comes back to the same count
            let victim = try VhostUserBlkFrontend(socketPath: daemon.victimSocket, options: FrontendOptions(slotsPerQueue: 2))
            let errorFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
            defer { close(errorFD) }
            try victim.setVringErrorFD(queue: 0, fd: errorFD)
            var queue = victim.queues[0]
            #expect(try completeRequest(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)
            HostileRingTests.Corruption.nextLoop.apply(to: &queue, memory: victim.memory)
            queue.kick()
            #expect(victim.waitForBackendFailure(milliseconds: 10_000) == "backend closed the vhost-user connection during the run")

            // The teardown runs asynchronously, in milliseconds on a quiet machine; with other
            // builds and tests beside it the daemon may not get a CPU for seconds: wait for it
            // (30 s at most; the count must still come back exactly).
            let deadline = Date().addingTimeInterval(30)
            var after = try ConnectionLeakTests.usage(of: pid)
            while after.fds > baseline.fds && Date() < deadline {
                usleep(10_000)
                after = try ConnectionLeakTests.usage(of: pid)
            }
            let left = Self.descriptors(of: pid).subtracting(before)
            #expect(after.fds == baseline.fds, "round \(round): descriptors left after the disconnect: \(left.sorted())")
            withExtendedLifetime(victim) {}
        }
    }

    /// "fd -> target" for each of the process's descriptors.
    static func descriptors(of pid: Int32) -> Set<String> {
        let directory = "/proc/\(pid)/fd"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Set(names.map { "\($0) -> \((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)")) ?? "?")" })
    }
}
