import CSpindle
import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// The frontend's end of the vhost-user socket: sends requests, waits for their replies
/// (with a timeout) and, once REPLY_ACK is negotiated, asks for and checks an ack for
/// every request that has no reply of its own.
final class FrontendChannel {
    let socket: Int32
    private let reader: VhostUserMessageReader
    private let timeoutMilliseconds: Int32
    /// Set after SET_PROTOCOL_FEATURES accepted REPLY_ACK.
    var replyAckNegotiated = false

    /// Connects to the backend's Unix socket.
    init(path: String, timeoutMilliseconds: Int32) throws(FrontendError) {
        let fd = spindle_unix_connect(path)
        guard fd >= 0 else { throw FrontendError("cannot connect to \(path): \(errnoText(-fd))") }
        // The reader expects a non-blocking socket; replies are awaited with poll().
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw FrontendError("cannot make the socket non-blocking: \(errnoText(code))")
        }
        socket = fd
        reader = VhostUserMessageReader(socket: fd)
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    deinit {
        Glibc.close(socket)
    }

    /// Sends a request that has no reply of its own; with REPLY_ACK, waits for the ack and
    /// fails if the backend reports an error.
    func send(_ request: VhostUserRequest) throws(FrontendError) {
        let code = try knownCode(request)
        try transmit(request.message(needReply: replyAckNegotiated), name: request.name)
        guard replyAckNegotiated else { return }
        let reply = try receive(after: request.name)
        let ok: Bool
        do { ok = try VhostUserReplyDecoder.ack(reply, to: code) } catch { throw FrontendError("\(error)") }
        guard ok else { throw FrontendError("\(request.name): backend refused it (REPLY_ACK reported failure)") }
    }

    /// Sends a request without NEED_REPLY, even with REPLY_ACK, and waits for nothing (as
    /// QEMU stops dirty logging); the backend sends no reply to it.
    func post(_ request: VhostUserRequest) throws(FrontendError) {
        _ = try knownCode(request)
        try transmit(request.message(needReply: false), name: request.name)
    }

    /// Sends a request that has a reply and returns the reply (still to be decoded).
    func call(_ request: VhostUserRequest) throws(FrontendError) -> VhostUserMessage {
        _ = try knownCode(request)
        try transmit(request.message(needReply: false), name: request.name)
        return try receive(after: request.name)
    }

    /// A request with a u64 reply (GET_FEATURES, GET_QUEUE_NUM, ...).
    func callU64(_ request: VhostUserRequest) throws(FrontendError) -> UInt64 {
        let code = try knownCode(request)
        let reply = try call(request)
        do { return try VhostUserReplyDecoder.u64(reply, to: code) } catch { throw FrontendError("\(error)") }
    }

    private func knownCode(_ request: VhostUserRequest) throws(FrontendError) -> VhostUserRequestCode {
        guard let code = VhostUserRequestCode(rawValue: request.rawCode) else {
            throw FrontendError("cannot send unknown request code \(request.rawCode)")
        }
        return code
    }

    private func transmit(_ message: VhostUserMessage, name: String) throws(FrontendError) {
        do {
            try VhostUserSocket.sendMessage(fd: socket, message: message, timeoutMilliseconds: timeoutMilliseconds)
        } catch {
            throw FrontendError("\(name): \(error)")
        }
    }

    /// Waits for exactly one message (the reader never reads past it).
    private func receive(after name: String) throws(FrontendError) -> VhostUserMessage {
        var remaining = Int64(timeoutMilliseconds)
        var last = monotonicMilliseconds()
        while true {
            let result = reader.readAvailable(messageBudget: 1)
            if let message = result.messages.first { return message }
            if let end = result.end { throw FrontendError("\(name): no reply, \(end)") }
            guard remaining > 0 else { throw FrontendError("\(name): no reply within \(timeoutMilliseconds) ms") }
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(clamping: remaining))
            if ready < 0, errno != EINTR { throw FrontendError("\(name): poll failed: \(errnoText(errno))") }
            let now = monotonicMilliseconds()
            remaining -= now - last
            last = now
        }
    }
}

func monotonicMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}
