import CSpindle
import ControlThread
import Glibc
@testable import Monitor
import SpindleOptions
import SpindleTestSupport
import Testing

@Suite(.serialized) struct SocketTests {
    static func path(_ name: String) -> String { "/tmp/spindle-qmp-\(getpid())-\(name).sock" }

    @ControlActor static func server(at path: String, target: FakeCommandTarget) throws(QMPServerError) -> QMPServer {
        try QMPServer(path: path, target: target)
    }

    @Test func socketIsOwnerOnlyAndRemovedOnClose() async throws {
        let path = Self.path("mode")
        let target = FakeCommandTarget()
        let server = try await Self.server(at: path, target: target)
        var info = stat()
        #expect(lstat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
        let client = try QMPLineClient(path: path)
        _ = try client.readLine()
        await server.close()
        #expect(client.readsEndOfFile())
        #expect(lstat(path, &info) != 0)
    }

    @Test func staleSocketIsReplacedOtherFilesAreRefused() async throws {
        let path = Self.path("stale")
        let target = FakeCommandTarget()
        // A socket nobody listens on any more, as a crashed daemon leaves behind.
        let stale = spindle_unix_bind(path)
        #expect(stale >= 0)
        Glibc.close(stale)
        let server = try await Self.server(at: path, target: target)
        let client = try QMPLineClient(path: path)
        #expect(try client.readLine().hasPrefix(#"{"QMP""#))
        await server.close()

        let file = Self.path("regular")
        let fd = open(file, O_CREAT | O_WRONLY, 0o600)
        Glibc.close(fd)
        defer { unlink(file) }
        await #expect(throws: QMPServerError("'\(file)' exists and is not a socket; remove it or choose another monitor socket path")) {
            _ = try await Self.server(at: file, target: target)
        }
        var info = stat()
        #expect(lstat(file, &info) == 0 && info.st_mode & S_IFMT == S_IFREG)
        await #expect(throws: QMPServerError.self) {
            _ = try await Self.server(at: "/nonexistent-dir/qmp.sock", target: target)
        }
    }

    @Test func startMonitorsFromTheCommandLine() async throws {
        let first = Self.path("m0")
        let second = Self.path("q1")
        let action = try parseCommandLine([
            "--chardev", "socket,id=m0,path=\(first),server=on,wait=off", "--monitor", "chardev=m0,pretty=on",
            "--qmp", second,
        ])
        guard case .run(let configuration) = action else { Issue.record("not a run"); return }
        let target = FakeCommandTarget()
        let servers = try await startMonitors(configuration: configuration, target: target)
        #expect(servers.map(\.path) == [first, second])
        let pretty = try QMPLineClient(path: first)
        #expect(try pretty.readLine() == "{")
        let plain = try QMPLineClient(path: second)
        #expect(try plain.readLine().hasPrefix(#"{"QMP": "#))
        for server in servers { await server.close() }

        // A failure closes the monitors already started.
        var broken = configuration
        broken.monitors[1].chardev.path = "/nonexistent-dir/q.sock"
        await #expect(throws: QMPServerError.self) { _ = try await startMonitors(configuration: broken, target: target) }
        var info = stat()
        #expect(lstat(first, &info) != 0)
    }

    @Test func waitForFirstClient() async throws {
        let path = Self.path("wait")
        let target = FakeCommandTarget()
        let server = try await Self.server(at: path, target: target)
        let connector = Task { try await onThreadOfItsOwn { try QMPLineClient(path: path).readLine() } }
        await server.waitForFirstClient()
        #expect(try await connector.value.hasPrefix(#"{"QMP""#))
        await server.waitForFirstClient()  // returns at once now
        await server.close()
    }
}
