import Foundation
import SpindleTestSupport
import Testing
import VhostUser
@testable import VhostUserFrontend

/// `--state-file` seen from a frontend: data written through an export that exists only
/// because it was hot-plugged over QMP is read back through the same socket after the
/// daemon was SIGKILLed and started again with the same command line.
@Suite(.serialized, .enabled(if: BackendProcess.Kind.spindle.executable != nil, "needs spindle"))
struct StateFileRestartTests {
    static func pattern(_ block: Int) -> [UInt8] {
        (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ block &* 7 &+ 1) }
    }

    @Test func dataWrittenThroughAHotPluggedExportIsReadBackAfterSIGKILLAndRestart() throws {
        let directory = TemporaryDirectory(prefix: "spindle-state")
        defer { directory.remove() }
        let image = directory.file("disk.img")
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        #expect(truncate(image, 16 << 20) == 0)
        let exportSocket = directory.file("e1.sock")
        let arguments = { (qmpSocket: String) in ["--qmp", qmpSocket, "--state-file", directory.file("state.json")] }

        let first = try BackendProcess.start(.spindle, arguments: arguments)
        defer { first.stop() }
        let qmp = try QMPLineClient(path: first.socketPath)
        try qmp.leaveNegotiation()
        #expect(try qmp.command(#"{"execute": "blockdev-add", "arguments": {"driver": "file", "node-name": "disk", "filename": "\#(image)"}}"#)
            == #"{"return": {}}"#)
        #expect(try qmp.command(#"{"execute": "block-export-add", "arguments": {"type": "vhost-user-blk", "id": "e1", "node-name": "disk", "writable": true, "num-queues": 1, "addr": {"type": "unix", "path": "\#(exportSocket)"}}}"#)
            == #"{"return": {}}"#)
        let options = FrontendOptions(queueCount: 1, slotsPerQueue: 2, maxRequestBytes: 4096)
        let writer = try VhostUserBlkFrontend(socketPath: exportSocket, options: options)
        var queue = writer.queues[0]
        for block in 0..<8 {
            Self.pattern(block).withUnsafeBytes { queue.data(of: 0).copyMemory(from: $0.baseAddress!, byteCount: 4096) }
            #expect(try DurabilityTests.complete(&queue, slot: 0, type: .write, sector: UInt64(block) * 8) == BlkStatus.ok)
        }
        first.stop()  // SIGKILL, the frontend still connected

        let second = try BackendProcess.start(.spindle, arguments: arguments)
        defer { second.stop() }
        let reader = try VhostUserBlkFrontend(socketPath: exportSocket, options: options)
        var readQueue = reader.queues[0]
        for block in 0..<8 {
            #expect(try DurabilityTests.complete(&readQueue, slot: 1, type: .read, sector: UInt64(block) * 8) == BlkStatus.ok)
            let read = Array(UnsafeRawBufferPointer(start: readQueue.data(of: 1), count: 4096))
            #expect(read == Self.pattern(block), "block \(block) differs after the restart")
        }
        try reader.shutdown(finalQueues: [readQueue])
    }
}
