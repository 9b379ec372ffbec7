import BlockCommon
import CSpindle
import ControlThread
import Glibc
import Monitor
import SpindleOptions
import Synchronization
import Testing
import VhostUserFrontend
@testable import SpindleDaemon

/// A fresh directory under /tmp for a test's sockets; `remove()` deletes it and its files.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/spindle-daemon-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp: \(String(cString: strerror(errno)))")
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    func exists(_ name: String) -> Bool { access(file(name), F_OK) == 0 }

    func remove() {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink(file(name)) }
            }
            closedir(directory)
        }
        rmdir(path)
    }
}

/// How many times the daemon asked its owner to quit.
final class QuitRecorder: Sendable {
    private let count = Mutex(0)
    var requests: Int { count.withLock { $0 } }
    func record() { count.withLock { $0 += 1 } }
}

/// A started daemon with no command-line objects (host topology loaded, so automatic
/// placement works), plus what the test needs to tear it down.
@ControlActor
func startedDaemon(quit: QuitRecorder = QuitRecorder()) async throws -> Daemon {
    let daemon = Daemon(requestQuit: { quit.record() })
    try await daemon.start(DaemonConfiguration())
    return daemon
}

/// The QMP error `body` threw, nil if it succeeded (any other error fails the test).
@ControlActor
func qmpError(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async -> QMPError? {
    do {
        try await body()
        return nil
    } catch let error as QMPError {
        return error
    } catch {
        Issue.record("not a QMPError: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

func nullNode(_ name: String, size: UInt64 = 64 << 20) -> BlockdevOptions {
    var null = NullOptions()
    null.size = size
    return BlockdevOptions(nodeName: NodeName(name), driver: .null(null))
}

func exportOptions(_ id: String, node: String, in directory: TemporaryDirectory, iothread: String? = nil) -> VhostUserBlkExportOptions {
    var options = VhostUserBlkExportOptions(id: id, nodeName: NodeName(node), socketPath: directory.file("\(id).sock"))
    options.writable = true
    options.iothread = iothread
    return options
}

func iothreadObject(_ id: String) -> IOThreadObjectOptions {
    var options = IOThreadObjectOptions(id: id)
    options.pollMaxNs = 0
    return options
}

/// A vhost-user-blk frontend in this process. Its handshake and shutdown block on replies
/// that the control thread sends, so they run off the control thread.
final class InProcessFrontend: @unchecked Sendable {
    let frontend: VhostUserBlkFrontend

    private init(_ frontend: VhostUserBlkFrontend) { self.frontend = frontend }

    static func connect(to socketPath: String, queues: Int) async throws -> InProcessFrontend {
        try await Task.detached {
            InProcessFrontend(try VhostUserBlkFrontend(socketPath: socketPath, options: FrontendOptions(queueCount: queues)))
        }.value
    }

    /// Stops every queue (SET_VRING_ENABLE 0, GET_VRING_BASE), as QEMU does at device_del.
    func stopQueues() async throws {
        try await Task.detached { try self.frontend.shutdown(finalQueues: self.frontend.queues) }.value
    }
}

/// query-iothreads' queues, by thread id.
@ControlActor
func queuesByThread(_ daemon: Daemon) -> [String: [String]] {
    Dictionary(uniqueKeysWithValues: daemon.queryIOThreads().map { ($0.id, $0.queues) })
}

/// Waits (a few seconds at most) until query-iothreads shows `expected` for the threads in it.
@ControlActor
func waitForQueues(_ daemon: Daemon, _ expected: [String: [String]]) async -> [String: [String]] {
    var seen = queuesByThread(daemon)
    for _ in 0..<200 where expected.contains(where: { seen[$0.key] != $0.value }) {
        try? await Task.sleep(nanoseconds: 10_000_000)
        seen = queuesByThread(daemon)
    }
    return seen
}

/// A QMP client on the daemon's monitor socket, reading whole lines. It blocks (reads time
/// out after five seconds), so every call runs off the control thread.
final class QMPLineClient: @unchecked Sendable {
    private let fd: Int32
    private var buffer: [UInt8] = []

    private init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    /// Connects and leaves capabilities negotiation behind (greeting, qmp_capabilities).
    static func negotiated(path: String) async throws -> QMPLineClient {
        try await Task.detached {
            let fd = spindle_unix_connect(path)
            guard fd >= 0 else { throw DaemonError("cannot connect to \(path): \(String(cString: strerror(-fd)))") }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let client = QMPLineClient(fd: fd)
            _ = try client.readLine()  // greeting
            let request = Array(#"{"execute": "qmp_capabilities"}"#.utf8) + [0x0A]
            guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count,
                  try client.readLine() == #"{"return": {}}"# else { throw DaemonError("qmp_capabilities failed") }
            return client
        }.value
    }

    /// The next `count` lines the daemon sends.
    func lines(_ count: Int) async throws -> [String] {
        try await Task.detached { try (0..<count).map { _ in try self.readLine() } }.value
    }

    private func readLine() throws -> String {
        while true {
            if let end = buffer.firstIndex(of: 0x0A) {
                let line = buffer[..<end].filter { $0 != 0x0D }
                buffer.removeSubrange(...end)
                return String(decoding: line, as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { throw DaemonError(count == 0 ? "monitor closed the connection" : "no message within 5 s") }
            buffer += chunk[..<count]
        }
    }
}
