import BlockCommon
import CSpindle
import ControlThread
import Glibc
import Monitor
import SpindleOptions
import SpindleTestSupport
import Synchronization
import Testing
import VhostUserFrontend
@testable import SpindleDaemon

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
        try await onThreadOfItsOwn {
            InProcessFrontend(try VhostUserBlkFrontend(socketPath: socketPath, options: FrontendOptions(queueCount: queues)))
        }
    }

    /// Stops every queue (SET_VRING_ENABLE 0, GET_VRING_BASE), as QEMU does at device_del.
    func stopQueues() async throws {
        try await onThreadOfItsOwn { try self.frontend.shutdown(finalQueues: self.frontend.queues) }
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

/// The daemon's monitor, as a client sees it. The client blocks (reads time out after five
/// seconds), so every call runs on a thread of its own, off the control thread.
extension QMPLineClient {
    /// Connects and leaves capabilities negotiation behind (greeting, qmp_capabilities).
    static func negotiated(path: String) async throws -> QMPLineClient {
        try await onThreadOfItsOwn {
            let client = try QMPLineClient(path: path)
            guard try client.leaveNegotiation() == #"{"return": {}}"# else { throw DaemonError("qmp_capabilities failed") }
            return client
        }
    }

    /// The next `count` lines the daemon sends.
    func lines(_ count: Int) async throws -> [String] {
        try await onThreadOfItsOwn { try self.readLines(count) }
    }
}
