import Foundation
import Glibc
import Testing
@testable import VhostUserFrontend

/// Four exports of 16 queues of 256 requests on one IOThread: each queue reserves 260
/// completion-queue entries of the thread's 16384, so 63 queues fit and the 64th is refused
/// when it starts, with a log line that says what to do. The daemon goes on serving.
@Suite(.serialized) struct CompletionQueueRefusalTests {
    @Test func aQueueThatDoesNotFitItsIOThreadIsRefusedAtSetup() throws {
        guard let executable = BackendProcess.Kind.spindle.executable else { throw FrontendError("spindle is not built") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cq-refusal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("spindle.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let ids = ["e0", "e1", "e2", "e3"]
        func socket(_ id: String) -> String { directory.appendingPathComponent("\(id).sock").path }
        var arguments = ["--object", "iothread,id=iot0",
                         "--blockdev", "driver=null-co,node-name=n0,size=67108864,read-zeroes=on"]
        for id in ids {
            arguments += ["--export", "type=vhost-user-blk,id=\(id),node-name=n0,addr.type=unix,addr.path=\(socket(id)),num-queues=16,iothread=iot0"]
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let deadline = Date().addingTimeInterval(20)
        while !ids.map(socket).allSatisfy(FileManager.default.fileExists) {
            guard process.isRunning, Date() < deadline else { throw FrontendError("spindle did not create its sockets") }
            usleep(10_000)
        }
        usleep(100_000)  // the socket file exists from bind(); listen() follows

        let options = FrontendOptions(queueCount: 16, slotsPerQueue: 8, queueSize: 256)
        var frontends: [VhostUserBlkFrontend] = []
        for id in ids.dropLast() { frontends.append(try VhostUserBlkFrontend(socketPath: socket(id), options: options)) }
        func logText() -> String { (try? String(contentsOfFile: log.path, encoding: .utf8)) ?? "" }
        #expect(!logText().contains("not started"), "48 queues fit: \(logText())")

        // The fourth export's queues: 15 fit, the 16th does not (the connection may close
        // while the frontend is still setting up).
        _ = try? VhostUserBlkFrontend(socketPath: socket("e3"), options: options)
        var refusal: String?
        for _ in 0..<500 where refusal == nil {
            refusal = logText().split(separator: "\n").first { $0.contains("not started") }.map(String.init)
            usleep(10_000)
        }
        let line = try #require(refusal, "no refusal logged: \(logText())")
        #expect(line.contains("export=e3"))
        #expect(line.contains("iothread 'iot0' has 3 of its 16384 completion-queue entries free and this needs 260"))
        #expect(line.contains("iothread-vq-mapping"))
        #expect(logText().split(separator: "\n").filter { $0.contains("not started") }.count == 1)
        #expect(process.isRunning)
        withExtendedLifetime(frontends) {}
    }
}
