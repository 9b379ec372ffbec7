import ControlThread
import Glibc
import Monitor
import SpindleOptions
import SpindleTestSupport
import Testing

extension QMPLineClient {
    func readJSON() throws -> JSONValue {
        try JSONText.parse(Array(try readLine().utf8))
    }

    func negotiate() throws {
        _ = try readLine()  // greeting
        #expect(try command(#"{"execute": "qmp_capabilities"}"#) == #"{"return": {}}"#)
    }
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
func negotiatedClient() async throws -> (QMPFixture, QMPLineClient) {
    let fixture = try await QMPFixture.make()
    let client = try QMPLineClient(path: fixture.path)
    try client.negotiate()
    return (fixture, client)
}
