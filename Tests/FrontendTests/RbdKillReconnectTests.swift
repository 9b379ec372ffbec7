import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// The cluster SPINDLE_CEPH_DIR names (its `env` file), if any.
struct RbdTestCluster {
    let conf: String
    let keyFile: String
    let monitorPort: String

    static let current: RbdTestCluster? = {
        guard let folder = ProcessInfo.processInfo.environment["SPINDLE_CEPH_DIR"],
              let text = try? String(contentsOfFile: folder + "/env", encoding: .utf8) else { return nil }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        guard let conf = values["CEPH_CONF"], let key = values["CEPH_ADMIN_KEY_FILE"], let port = values["CEPH_MON_PORT"] else { return nil }
        return RbdTestCluster(conf: conf, keyFile: key, monitorPort: port)
    }()
}

/// SIGKILL of spindle while two queues (on two IOThreads) keep writes in flight to an rbd
/// image, then a new spindle on the same socket, reached the way QEMU reconnects (same
/// memory, rings and inflight buffer): every request completes exactly once, none fails, and
/// each block holds the last pattern written to it. Needs a cluster: SPINDLE_CEPH_DIR=DIR
/// from `scripts/ceph-cluster.sh start DIR` (skipped without it).
@Suite(.serialized, .enabled(if: RbdTestCluster.current != nil && BackendProcess.Kind.spindle.executable != nil,
                             "needs SPINDLE_CEPH_DIR (scripts/ceph-cluster.sh start DIR) and spindle"))
struct RbdKillReconnectTests {
    static let queueCount = 2
    static let slots = 16
    static let loadSeconds = 1.5

    /// A byte that differs from one round of a slot to the next, never 0 (a hole reads 0).
    static func pattern(queue: Int, slot: Int, round: Int) -> UInt8 {
        UInt8((queue * slots + slot + round * 37) % 255 + 1)
    }

    static func sector(queue: Int, slot: Int) -> UInt64 { UInt64(queue * slots + slot) * 8 }

    static func rbd(_ arguments: [String], cluster: RbdTestCluster) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/rbd")
        process.arguments = ["-c", cluster.conf] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw FrontendError("rbd \(arguments.joined(separator: " ")) failed") }
    }

    /// Spindle with two IOThreads serving `image` on `socket` (queue 0 on io0, queue 1 on io1).
    static func startSpindle(socket: String, image: String, cluster: RbdTestCluster, log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: BackendProcess.Kind.spindle.executable!)
        process.arguments = [
            "--object", "secret,id=sec0,file=\(cluster.keyFile),format=base64",
            "--object", "iothread,id=io0", "--object", "iothread,id=io1",
            "--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=\(image),user=admin,key-secret=sec0,conf=/dev/null,"
                + "server.0.host=127.0.0.1,server.0.port=\(cluster.monitorPort)",
            "--export", "type=vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path=\(socket),writable=on,"
                + "num-queues=\(queueCount),iothread.0=io0,iothread.1=io1",
        ]
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: socket) {
            guard process.isRunning, Date() < deadline else {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw FrontendError("spindle did not listen on \(socket): see \(log)")
            }
            usleep(20_000)
        }
        return process
    }

    /// The driver's view of its queues: which slots are in flight, each slot's round, and
    /// everything that went wrong.
    struct Driver {
        var queues: [BlkQueue]
        var outstanding: [Set<Int>]
        var rounds: [[Int]]
        var completed = 0
        var problems: [String] = []

        init(queues: [BlkQueue]) {
            self.queues = queues
            outstanding = Array(repeating: [], count: queues.count)
            rounds = Array(repeating: Array(repeating: 0, count: RbdKillReconnectTests.slots), count: queues.count)
        }

        /// Fills every free slot with its next write and kicks.
        mutating func submitWrites() {
            for q in queues.indices {
                for slot in 0..<RbdKillReconnectTests.slots where !outstanding[q].contains(slot) {
                    rounds[q][slot] += 1
                    let byte = RbdKillReconnectTests.pattern(queue: q, slot: slot, round: rounds[q][slot])
                    queues[q].data(of: slot).initializeMemory(as: UInt8.self, repeating: byte, count: 4096)
                    queues[q].prepare(slot: slot, type: .write, sector: RbdKillReconnectTests.sector(queue: q, slot: slot), byteCount: 4096)
                    queues[q].submit(slot: slot)
                    outstanding[q].insert(slot)
                }
                _ = queues[q].ring.publishAvailable()
                queues[q].kick()
            }
        }

        /// Takes every completion there is; one for a slot not in flight is a request
        /// completed twice.
        mutating func harvest() {
            for q in queues.indices {
                while (queues[q].ring.pendingUsedCount() ?? 0) > 0 {
                    let entry = queues[q].ring.popUsed()
                    guard let slot = queues[q].slot(forUsedID: entry.id), outstanding[q].remove(slot) != nil else {
                        problems.append("queue \(q): used id \(entry.id) completed but nothing was in flight there")
                        continue
                    }
                    if queues[q].status(of: slot) != BlkStatus.ok { problems.append("queue \(q) slot \(slot): status \(queues[q].status(of: slot))") }
                    completed += 1
                }
            }
        }

        var inFlight: Int { outstanding.reduce(0) { $0 + $1.count } }

        mutating func harvestAll(seconds: Double) {
            let deadline = Date().addingTimeInterval(seconds)
            while inFlight > 0 && Date() < deadline {
                harvest()
                if inFlight > 0 { usleep(500) }
            }
        }
    }

    @Test func killedUnderWriteLoadAndRestartedOnTheSameSocketLosesAndRepeatsNothing() throws {
        let cluster = try #require(RbdTestCluster.current)
        let image = "kill-\(UUID().uuidString.prefix(8).lowercased())"
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rbd-kill-\(image)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("r0.sock").path
        try Self.rbd(["create", "--size", "64M", "rbd/\(image)"], cluster: cluster)
        defer { try? Self.rbd(["rm", "rbd/\(image)"], cluster: cluster) }

        let first = try Self.startSpindle(socket: socket, image: image, cluster: cluster, log: directory.appendingPathComponent("first.log").path)
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL); first.waitUntilExit() } }
        var options = FrontendOptions(queueCount: Self.queueCount, slotsPerQueue: Self.slots, maxRequestBytes: 4096)
        options.inflightTracking = true
        let frontend = try VhostUserBlkFrontend(socketPath: socket, options: options)
        var driver = Driver(queues: frontend.queues)
        let loadEnd = Date().addingTimeInterval(Self.loadSeconds)
        while Date() < loadEnd {
            driver.submitWrites()
            usleep(1000)
            driver.harvest()
        }
        let completedBeforeKill = driver.completed
        driver.submitWrites()
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        driver.harvest()
        let inFlightAtKill = driver.inFlight

        // The new process replaces the dead one's socket file, as a restarted daemon does.
        unlink(socket)
        let second = try Self.startSpindle(socket: socket, image: image, cluster: cluster, log: directory.appendingPathComponent("second.log").path)
        defer {
            // SIGTERM: a clean exit releases the lock, so removing the image does not wait for
            // a dead client's watch to expire (~30 s); SIGKILL only if it hangs.
            if second.isRunning { kill(second.processIdentifier, SIGTERM) }
            let deadline = Date().addingTimeInterval(20)
            while second.isRunning && Date() < deadline { usleep(50_000) }
            if second.isRunning { kill(second.processIdentifier, SIGKILL) }
            second.waitUntilExit()
        }
        let resumed = try frontend.reconnect(socketPath: socket, queues: driver.queues)
        for q in driver.queues.indices { driver.queues[q].kick() }
        // The dead process still holds the image's exclusive lock until its watch times out
        // in the OSD (about 30 s); the image's takeover record proves it is this daemon's dead
        // predecessor, so the new process breaks it at once (RbdStaleLockTakeover.swift).
        driver.harvestAll(seconds: 120)
        usleep(300_000)
        driver.harvest()  // anything more would be a request completed twice
        let secondLog = (try? String(contentsOfFile: directory.appendingPathComponent("second.log").path, encoding: .utf8)) ?? ""
        #expect(second.isRunning, "the restarted spindle died: \(secondLog)")
        #expect(secondLog.contains("broke the stale exclusive lock of this daemon's dead predecessor"), "\(secondLog)")

        #expect(completedBeforeKill > 0, "no write completed before the kill")
        #expect(inFlightAtKill > 0, "nothing was in flight at the kill")
        #expect(driver.inFlight == 0, "requests never completed after the restart: \(driver.outstanding)")
        #expect(driver.problems.isEmpty, "\(driver.problems)")

        // Each block holds its last write: read them back through the new process.
        for q in driver.queues.indices {
            for slot in 0..<Self.slots {
                driver.queues[q].data(of: slot).initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
                driver.queues[q].prepare(slot: slot, type: .read, sector: Self.sector(queue: q, slot: slot), byteCount: 4096)
                driver.queues[q].submit(slot: slot)
                driver.outstanding[q].insert(slot)
            }
            _ = driver.queues[q].ring.publishAvailable()
            driver.queues[q].kick()
        }
        driver.harvestAll(seconds: 30)
        #expect(driver.inFlight == 0 && driver.problems.isEmpty, "\(driver.problems)")
        for q in driver.queues.indices {
            for slot in 0..<Self.slots {
                let want = Self.pattern(queue: q, slot: slot, round: driver.rounds[q][slot])
                let data = UnsafeRawBufferPointer(start: driver.queues[q].data(of: slot), count: 4096)
                #expect(data.allSatisfy { $0 == want }, "queue \(q) slot \(slot): not its last write (round \(driver.rounds[q][slot]))")
            }
        }
        #expect(throws: Never.self) { try resumed.shutdown(finalQueues: driver.queues) }
        print("rbd kill/restart: \(completedBeforeKill) writes before the kill, \(inFlightAtKill) in flight at it, \(driver.completed) completions in all")
    }
}
