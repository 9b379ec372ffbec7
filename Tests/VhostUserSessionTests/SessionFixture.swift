import ControlThread
import CSpindle
import Glibc
import IOThreads
import Logging
import SpindleTestSupport
@testable import VhostUser

/// A session on the control thread with a fake device and one IOThread. The frontend end is
/// either a socketpair (`RawFrontend`) or, for `VhostUserBlkFrontend` (which connects by
/// path), a listening socket whose first connection becomes the session.
@ControlActor
final class SessionFixture {
    let device: FakeDevice
    let threads: FakeThreads
    private(set) var session: VhostUserBackendSession?
    private(set) var closedCount = 0
    private var listener: UnixListener?
    private var listenWatch: FileDescriptorWatch?
    let directory = TemporaryDirectory(prefix: "spindle-session")

    init(device: FakeDevice) throws {
        self.device = device
        threads = try FakeThreads()
    }

    private func startSession(socket fd: Int32) throws {
        var logger = Logger(label: "spindle.session-test")
        logger[metadataKey: "export"] = "fake0"
        session = try VhostUserBackendSession(socket: fd, exportID: "fake0", device: device, threads: threads,
                                              logger: logger) { [weak self] _ in self?.closedCount += 1 }
    }

    /// A session on one end of a socketpair; returns the frontend's end.
    func connectSocketpair() throws -> RawFrontend {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw TestFailure("socketpair: \(String(cString: strerror(errno)))")
        }
        try startSession(socket: fds[0])
        return RawFrontend(socket: fds[1])
    }

    /// A socket path whose first connection becomes the session.
    func listen() throws -> String {
        let path = directory.file("vhost.sock")
        let listener = try UnixListener(path: path)
        self.listener = listener
        listenWatch = try ControlExecutor.shared.watch(fd: listener.fd, events: EPOLLIN.rawValue) { [weak self] _ in
            guard let self, self.session == nil, let fd = self.listener?.accept() else { return }
            try? self.startSession(socket: fd)
        }
        return path
    }

    /// Waits (up to 30 s: see `RawFrontend.patienceMilliseconds`) for `condition`, letting
    /// the control thread run meanwhile.
    func eventually(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<3000 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }

    func tearDown() async {
        if let listenWatch { ControlExecutor.shared.unwatch(listenWatch) }
        listener?.close()
        if let session { await session.close(reason: "test over") }
        threads.shutDown()
        directory.remove()
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The frontend's end of a socketpair, speaking raw vhost-user: each call blocks (with a
/// timeout) and so must not run on the control thread.
final class RawFrontend: @unchecked Sendable {
    let socket: Int32
    private let reader: VhostUserMessageReader

    init(socket: Int32) {
        self.socket = socket
        reader = VhostUserMessageReader(socket: socket)
    }

    deinit { Glibc.close(socket) }

    func send(_ request: VhostUserRequest, needReply: Bool = false) throws {
        try sendMessage(request.message(needReply: needReply))
    }

    func sendMessage(_ message: VhostUserMessage) throws {
        try VhostUserSocket.sendMessage(fd: socket, bytes: message.encoded, fds: message.fds)
    }

    /// How long the frontend waits for the session: generous, because the whole suite runs
    /// in parallel on a shared machine; the tests take milliseconds when it is quiet.
    static let patienceMilliseconds: Int32 = 30_000

    /// The next message; throws if the session closed the connection or took too long.
    func receive() throws -> VhostUserMessage {
        for _ in 0..<(Self.patienceMilliseconds / 100) {
            let result = reader.readAvailable(messageBudget: 1)
            if let message = result.messages.first { return message }
            if let end = result.end { throw TestFailure("no reply: the session ended the connection (\(end))") }
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, 100)
        }
        throw TestFailure("no reply within \(Self.patienceMilliseconds) ms")
    }

    /// Hangs up (the session sees the stream end).
    func hangUp() { shutdown(socket, Int32(SHUT_RDWR)) }

    func call(_ request: VhostUserRequest) throws -> VhostUserMessage {
        try call(message: request.message())
    }

    func call(message: VhostUserMessage) throws -> VhostUserMessage {
        try sendMessage(message)
        do {
            return try receive()
        } catch {
            throw TestFailure("request \(message.header.request): \(error)")
        }
    }

    /// Whether the session closed its end (within the patience).
    func sessionHungUp() -> Bool {
        for _ in 0..<(Self.patienceMilliseconds / 100) {
            let result = reader.readAvailable(messageBudget: 1)
            if result.end != nil { return true }
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN | Int32(POLLRDHUP)), revents: 0)
            _ = poll(&descriptor, 1, 100)
        }
        return false
    }
}
