import CSpindle
import Glibc
import Testing
@testable import VhostUser

/// Detects whether every copy of a file descriptor has been closed, without racing other
/// tests that open fds concurrently (and might be handed a just-closed fd number): the
/// probe's fds are write ends of a pipe, and the read end sees EOF only once all of them
/// are closed, wherever they went (into a message, across a socket).
final class FDClosureProbe {
    private let readEnd: Int32
    private var writeEnd: Int32

    init() {
        var ends: [Int32] = [-1, -1]
        let result = pipe2(&ends, O_NONBLOCK | O_CLOEXEC)
        precondition(result == 0, "pipe2 failed in test setup")
        readEnd = ends[0]
        writeEnd = ends[1]
    }

    /// A new descriptor whose closing the probe watches. Call `releaseOriginal()` once all
    /// wanted copies exist.
    func makeFD() -> Int32 {
        dup(writeEnd)
    }

    /// Closes the probe's own copy, so only the handed-out fds keep the pipe open.
    func releaseOriginal() {
        if writeEnd >= 0 {
            close(writeEnd)
            writeEnd = -1
        }
    }

    /// True once every copy handed out (and the original) is closed.
    var allClosed: Bool {
        var byte: UInt8 = 0
        return read(readEnd, &byte, 1) == 0
    }

    deinit {
        releaseOriginal()
        close(readEnd)
    }
}

/// A connected AF_UNIX stream socket pair: `backend` (non-blocking, read by the reader
/// under test) and `frontend` (blocking, the test's end).
final class SocketPair {
    let backend: Int32
    private(set) var frontend: Int32

    init() {
        var fds: [Int32] = [-1, -1]
        let result = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        precondition(result == 0, "socketpair failed in test setup")
        backend = fds[0]
        frontend = fds[1]
        let flags = fcntl(backend, F_GETFL)
        _ = fcntl(backend, F_SETFL, flags | O_NONBLOCK)
    }

    /// Sends raw bytes (and fds) from the front-end side; the whole buffer must go.
    func send(_ bytes: [UInt8], fds: [Int32] = []) {
        let sent = bytes.withUnsafeBytes { raw in
            fds.withUnsafeBufferPointer { fdPointer in
                spindle_send_with_fds(frontend, raw.baseAddress, raw.count, fdPointer.baseAddress, Int32(fds.count))
            }
        }
        #expect(sent == bytes.count)
    }

    func send(_ message: VhostUserMessage) {
        send(message.encoded, fds: message.fds)
    }

    func closeFrontend() {
        if frontend >= 0 {
            close(frontend)
            frontend = -1
        }
    }

    deinit {
        close(backend)
        closeFrontend()
    }
}

/// Builds a message by hand (independently of the encoder under test).
func rawMessage(_ request: UInt32, flags: UInt32 = 1, payload: [UInt8] = [], size: UInt32? = nil,
                fds: [Int32] = []) -> VhostUserMessage {
    VhostUserMessage(header: VhostUserHeader(request: request, flags: VhostUserHeaderFlags(rawValue: flags),
                                             size: size ?? UInt32(payload.count)),
                     payload: payload, fds: fds)
}

func rawMessage(_ code: VhostUserRequestCode, flags: UInt32 = 1, payload: [UInt8] = [],
                fds: [Int32] = []) -> VhostUserMessage {
    rawMessage(code.rawValue, flags: flags, payload: payload, fds: fds)
}

/// Little-endian bytes of integers, for hand-built payloads.
func le(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
func le(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
func le(_ value: UInt16) -> [UInt8] { (0..<2).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

/// Decodes, expecting a protocol error; returns its description.
func decodeError(_ message: VhostUserMessage, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    do {
        let request = try VhostUserRequest.decode(message)
        Issue.record("expected a protocol error, decoded \(request)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error.description
    }
}
