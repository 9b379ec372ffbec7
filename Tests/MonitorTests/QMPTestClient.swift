import CSpindle
import ControlThread
import Glibc
import Monitor
import SpindleOptions
import Testing

/// A blocking QMP client for tests, on a real Unix socket. Reads time out after a few
/// seconds so a missing reply fails the test instead of hanging it.
final class QMPTestClient {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(path: String, timeoutSeconds: Int = 5) throws {
        let fd = spindle_unix_connect(path)
        guard fd >= 0 else { throw TestFailure("cannot connect to \(path): \(String(cString: strerror(-fd)))") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    func send(_ text: String) {
        var bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeMutableBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { return }
            sent += count
        }
    }

    func sendBytes(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { return }
            sent += count
        }
    }

    /// The next message's line, without its "\r\n".
    func readLine() throws -> String {
        while true {
            if let end = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[..<end])
                buffer.removeSubrange(...end)
                #expect(line.last == 0x0D, "QMP lines end in \\r\\n")
                return String(decoding: line.dropLast(line.last == 0x0D ? 1 : 0), as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { throw TestFailure("connection closed") }
            if count < 0 { throw TestFailure("no reply (errno \(errno))") }
            buffer += chunk[..<count]
        }
    }

    /// Whether the server closed the connection (after everything buffered was read).
    func readsEndOfFile() -> Bool {
        guard buffer.isEmpty else { return false }
        var byte: UInt8 = 0
        return Glibc.recv(fd, &byte, 1, 0) == 0
    }

    func readJSON() throws -> JSONValue {
        try JSONText.parse(Array(try readLine().utf8))
    }

    /// Sends `text` plus a newline and returns the reply line.
    @discardableResult
    func command(_ text: String) throws -> String {
        send(text + "\n")
        return try readLine()
    }

    func negotiate() throws {
        _ = try readLine()  // greeting
        #expect(try command(#"{"execute": "qmp_capabilities"}"#) == #"{"return": {}}"#)
    }

    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A server on a fresh socket path with a fake target; keep the fixture alive for the test.
@ControlActor
final class QMPFixture {
    static var counter = 0
    let target = FakeCommandTarget()
    let server: QMPServer
    nonisolated let path: String

    init(pretty: Bool = false, messageLimit: Int = QMPServer.defaultMessageLimit) throws {
        QMPFixture.counter += 1
        path = "/tmp/spindle-qmp-\(getpid())-\(QMPFixture.counter).sock"
        server = try QMPServer(path: path, target: target, pretty: pretty, messageLimit: messageLimit)
    }

    static func make(pretty: Bool = false, messageLimit: Int = QMPServer.defaultMessageLimit) throws -> QMPFixture {
        try QMPFixture(pretty: pretty, messageLimit: messageLimit)
    }

    func close() { server.close() }

    /// For `defer`: removes the socket at once (the process may end before the server's
    /// own close runs) and closes the server on the control thread.
    nonisolated func closeSoon() {
        unlink(path)
        Task { await close() }
    }
}

/// Starts a fixture and a client that has completed negotiation.
func negotiatedClient() async throws -> (QMPFixture, QMPTestClient) {
    let fixture = try await QMPFixture.make()
    let client = try QMPTestClient(path: fixture.path)
    try client.negotiate()
    return (fixture, client)
}
