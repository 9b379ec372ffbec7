import CSpindle
import Glibc
import SpindleTestSupport
import Synchronization
import Testing

/// The shared QMP client against a listening socket the test answers by hand.
@Suite struct QMPLineClientTests {
    /// A signal that interrupts the client's wait (SIGCHLD when another suite's child exits)
    /// is not the end of the reply. The client's receive timeout means recv is never
    /// restarted by the kernel, whatever the handler's flags: it fails with EINTR.
    @Test func readLineWaitsOnAfterASignal() async throws {
        let directory = TemporaryDirectory(prefix: "spindle-qmp-client")
        defer { directory.remove() }
        let path = directory.file("q.sock")
        let listener = try Self.listen(at: path)
        defer { close(listener) }
        let previous = signal(SIGUSR1, { _ in })
        defer { signal(SIGUSR1, previous) }

        let readerThread = Mutex<pthread_t?>(nil)
        let reply = Task {
            try await onThreadOfItsOwn { () throws -> String in
                let client = try QMPLineClient(path: path)
                // The runner's threads inherit a mask that blocks SIGUSR1; this thread is the test's own.
                var usr1 = sigset_t()
                sigemptyset(&usr1)
                sigaddset(&usr1, SIGUSR1)
                pthread_sigmask(SIG_UNBLOCK, &usr1, nil)
                readerThread.withLock { $0 = pthread_self() }
                return try client.readLine()
            }
        }
        var reader: pthread_t?
        while reader == nil {
            try await Task.sleep(nanoseconds: 1_000_000)
            reader = readerThread.withLock { $0 }
        }
        let server = spindle_accept(listener)  // the client is connected by now
        #expect(server >= 0)
        defer { close(server) }
        // Several signals over a while, so that some land while the reader waits in recv.
        for _ in 0..<10 {
            try await Task.sleep(nanoseconds: 20_000_000)
            pthread_kill(reader!, SIGUSR1)
        }
        let line = Array("{\"return\": {}}\r\n".utf8)
        #expect(line.withUnsafeBytes { send(server, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == line.count)
        #expect(try await reply.value == #"{"return": {}}"#)
    }

    private static func listen(at path: String) throws -> Int32 {
        let fd = spindle_unix_bind(path)
        guard fd >= 0, Glibc.listen(fd, 1) == 0 else {
            throw QMPClientError("cannot listen on \(path): \(String(cString: strerror(fd < 0 ? -fd : errno)))")
        }
        return fd
    }
}
