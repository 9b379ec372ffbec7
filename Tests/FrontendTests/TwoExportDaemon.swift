import Foundation
import CSpindle
@testable import VhostUserFrontend

/// The Spindle binary serving two exports on one shared IOThread: "victim" (a 64 MiB null-co
/// node) for a hostile frontend, and "bystander" (a raw image file) for a well-behaved one
/// that must stay unaffected. Started with umask 000 so the socket permissions it reports
/// are its own choice. Its log (stderr) is kept for the tests to read.
struct TwoExportDaemon {
    let process: Process
    let directory: URL
    var victimSocket: String { directory.appendingPathComponent("victim.sock").path }
    var bystanderSocket: String { directory.appendingPathComponent("bystander.sock").path }
    var monitorSocket: String { directory.appendingPathComponent("qmp.sock").path }
    var logPath: String { directory.appendingPathComponent("spindle.log").path }

    static var executable: String? { BackendProcess.Kind.spindle.executable }

    /// `victimKeys` are added to the victim export's options (e.g. ",packed-ring=on");
    /// `holdVictimMilliseconds` puts an x-delay filter holding every completion that long
    /// over the victim's node (so its requests stay in flight).
    static func start(victimKeys: String = "", holdVictimMilliseconds: Int? = nil) throws -> TwoExportDaemon {
        guard let executable else { throw FrontendError("spindle is not built") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hostile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let image = directory.appendingPathComponent("bystander.img")
        _ = FileManager.default.createFile(atPath: image.path, contents: nil)
        try FileHandle(forWritingTo: image).truncate(atOffset: 16 << 20)
        let log = directory.appendingPathComponent("spindle.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)

        func export(_ id: String) -> String {
            "type=vhost-user-blk,id=\(id),node-name=\(id),addr.type=unix,addr.path=\(directory.path)/\(id).sock,"
                + "writable=on,num-queues=1,iothread=io0"
        }
        let victimNode = holdVictimMilliseconds.map { milliseconds in
            ["--blockdev", "driver=null-co,node-name=victim-base,size=67108864,read-zeroes=on",
             "--blockdev", "driver=x-delay,node-name=victim,file=victim-base,hold-every=1,hold-ms=\(milliseconds)"]
        } ?? ["--blockdev", "driver=null-co,node-name=victim,size=67108864,read-zeroes=on"]
        let arguments = victimNode + [
            "--blockdev", "driver=file,node-name=bystander,filename=\(image.path)",
            "--object", "iothread,id=io0",
            "--export", export("victim") + victimKeys, "--export", export("bystander"),
            "--chardev", "socket,id=qmp0,path=\(directory.path)/qmp.sock,server=on,wait=off",
            "--monitor", "chardev=qmp0",
        ]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "umask 000; exec \"$0\" \"$@\"", executable] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        let daemon = TwoExportDaemon(process: process, directory: directory)
        let deadline = Date().addingTimeInterval(20)
        while ![daemon.victimSocket, daemon.bystanderSocket, daemon.monitorSocket].allSatisfy(FileManager.default.fileExists) {
            guard process.isRunning, Date() < deadline else {
                let text = daemon.log
                daemon.stop()
                throw FrontendError("spindle did not create its sockets: \(text)")
            }
            usleep(10_000)
        }
        return daemon
    }

    var isRunning: Bool { process.isRunning }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits (10 s at most) for a log line containing `text`.
    func waitForLog(_ text: String) -> Bool {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if log.contains(text) { return true }
            usleep(20_000)
        }
        return false
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A well-behaved frontend on the bystander export, writing and reading back patterns on its
/// own thread until stopped, recording every wrong byte or failed request.
final class Bystander: @unchecked Sendable {
    private let frontend: VhostUserBlkFrontend
    private let lock = NSLock()
    private var completedRounds = 0
    private var problems: [String] = []
    private var stopRequested = false
    private var finished = false
    static let slots = 4
    static let bytes = 8192

    init(socket: String) throws {
        frontend = try VhostUserBlkFrontend(socketPath: socket, options: FrontendOptions(slotsPerQueue: Self.slots, maxRequestBytes: Self.bytes))
    }

    /// A bystander on `daemon`'s bystander export, started and past its first two rounds (so
    /// the IOThread the exports share is busy). Stop it when done.
    static func running(on daemon: TwoExportDaemon) throws -> Bystander {
        let bystander = try Bystander(socket: daemon.bystanderSocket)
        bystander.start()
        guard bystander.waitForRounds(2) else {
            bystander.stop()
            throw FrontendError("the bystander did not complete two rounds: \(bystander.failures)")
        }
        return bystander
    }

    var rounds: Int { lock.withLock { completedRounds } }
    var failures: [String] { lock.withLock { problems } }

    func start() {
        Thread.detachNewThread { self.run() }
    }

    /// Waits (30 s at most) until `count` rounds are done in total.
    func waitForRounds(_ count: Int) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if lock.withLock({ completedRounds >= count || finished }) { return rounds >= count }
            usleep(5_000)
        }
        return false
    }

    func stop() {
        lock.withLock { stopRequested = true }
        while !lock.withLock({ finished }) { usleep(1_000) }
    }

    private func run() {
        var queue = frontend.queues[0]
        var round = 0
        defer { lock.withLock { finished = true } }
        while !lock.withLock({ stopRequested }) {
            round += 1
            do {
                for slot in 0..<Self.slots {
                    let sector = UInt64((round % 16) * Self.slots + slot) * UInt64(Self.bytes / 512)
                    let data = queue.data(of: slot)
                    for i in 0..<Self.bytes { data.storeBytes(of: Self.pattern(i, round, slot), toByteOffset: i, as: UInt8.self) }
                    let wrote = try completeRequest(&queue, slot: slot, type: .write, sector: sector, bytes: Self.bytes)
                    data.initializeMemory(as: UInt8.self, repeating: 0xEE, count: Self.bytes)
                    let read = try completeRequest(&queue, slot: slot, type: .read, sector: sector, bytes: Self.bytes)
                    guard wrote == BlkStatus.ok, read == BlkStatus.ok else {
                        throw FrontendError("round \(round) slot \(slot): write status \(wrote), read status \(read)")
                    }
                    for i in 0..<Self.bytes where data.load(fromByteOffset: i, as: UInt8.self) != Self.pattern(i, round, slot) {
                        throw FrontendError("round \(round) slot \(slot): byte \(i) read back wrong")
                    }
                }
                lock.withLock { completedRounds += 1 }
            } catch {
                lock.withLock { problems.append("\(error)") }
                return
            }
        }
    }

    static func pattern(_ i: Int, _ round: Int, _ slot: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: i &* 31 &+ round &* 7 &+ slot &* 101 &+ (i >> 8))
    }
}

/// Submits one request and polls the used ring for it (10 s at most).
func completeRequest(_ queue: inout BlkQueue, slot: Int, type: BlkRequestType, sector: UInt64, bytes: Int) throws -> UInt8 {
    queue.prepare(slot: slot, type: type, sector: sector, byteCount: bytes)
    queue.submit(slot: slot)
    _ = queue.ring.publishAvailable()
    queue.kick()
    let deadline = Date().addingTimeInterval(10)
    while queue.ring.pendingUsedCount() == 0 {
        guard Date() < deadline else { throw FrontendError("request did not complete within 10 s") }
        usleep(100)
    }
    let entry = queue.ring.popUsed()
    guard queue.slot(forUsedID: entry.id) == slot else { throw FrontendError("used id \(entry.id) is not slot \(slot)") }
    return queue.status(of: slot)
}

/// Whether `fd` becomes readable within `milliseconds`.
func becomesReadable(_ fd: Int32, milliseconds: Int32) -> Bool {
    var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&descriptor, 1, milliseconds) == 1
}
