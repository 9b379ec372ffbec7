import CSpindle
import Glibc

/// A blocking QMP client for tests, on a real Unix socket, reading whole lines. Reads time
/// out after a few seconds so a missing reply fails the test instead of hanging it. Every
/// call blocks: never call it on the control thread (the server answers there) nor on
/// Swift's cooperative pool (see `onThreadOfItsOwn`).
public final class QMPLineClient: @unchecked Sendable {
    public let fd: Int32
    private var buffer: [UInt8] = []

    public init(path: String, timeoutSeconds: Int = 5) throws {
        let fd = spindle_unix_connect(path)
        guard fd >= 0 else { throw QMPClientError("cannot connect to \(path): \(String(cString: strerror(-fd)))") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    public func send(_ text: String) { sendBytes(Array(text.utf8)) }

    public func sendBytes(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { return }
            sent += count
        }
    }

    /// The next message's line, without its "\r\n"; a line ending in a bare "\n" is an error.
    public func readLine() throws -> String {
        while true {
            if let end = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[..<end])
                buffer.removeSubrange(...end)
                guard line.last == 0x0D else {
                    throw QMPClientError("QMP lines end in \\r\\n: \(String(decoding: line, as: UTF8.self))")
                }
                return String(decoding: line.dropLast(), as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { throw QMPClientError("connection closed") }
            // A signal (SIGCHLD when another test's child exits) interrupts the wait, not the reply.
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw QMPClientError("no reply (errno \(errno))") }
            buffer += chunk[..<count]
        }
    }

    /// The next `count` lines.
    public func readLines(_ count: Int) throws -> [String] {
        try (0..<count).map { _ in try readLine() }
    }

    /// Whether the server closed the connection (after everything buffered was read).
    public func readsEndOfFile() -> Bool {
        guard buffer.isEmpty else { return false }
        var byte: UInt8 = 0
        while true {
            let count = Glibc.recv(fd, &byte, 1, 0)
            if count < 0 && errno == EINTR { continue }
            return count == 0
        }
    }

    /// Sends `text` plus a newline and returns the reply line.
    @discardableResult
    public func command(_ text: String) throws -> String {
        send(text + "\n")
        return try readLine()
    }

    /// Reads the greeting and negotiates capabilities; returns qmp_capabilities' reply line.
    @discardableResult
    public func leaveNegotiation() throws -> String {
        _ = try readLine()  // greeting
        return try command(#"{"execute": "qmp_capabilities"}"#)
    }

    public func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }
}

public struct QMPClientError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
