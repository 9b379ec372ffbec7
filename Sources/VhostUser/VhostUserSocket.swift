import CSpindle
#if canImport(Glibc)
import Glibc
#endif

/// Sending vhost-user messages on a (normally non-blocking) stream socket.
public enum VhostUserSocket {
    /// How long `sendMessage` waits in total for a full socket buffer to drain.
    public static let defaultSendTimeoutMilliseconds: Int32 = 1000

    /// Sends one message: `bytes` (header and payload) with `fds` attached to its first
    /// byte. The fds stay owned by the caller; the peer receives duplicates.
    ///
    /// Replies are small and the peer is waiting for them, so instead of queueing, a send
    /// that returns EAGAIN is retried after poll() reports the socket writable, for at most
    /// `timeoutMilliseconds` in total. This blocks the calling thread for at most that
    /// long, which is acceptable on the control path only. If it times out part of the
    /// message may already be sent: the stream is then out of step and the connection must
    /// be closed.
    public static func sendMessage(fd: Int32, bytes: [UInt8], fds: [Int32] = [],
                                   timeoutMilliseconds: Int32 = defaultSendTimeoutMilliseconds) throws(VhostUserSendError) {
        guard fds.count <= VhostUserMessageReader.maxFDsPerMessage else {
            throw .tooManyFileDescriptors(fds.count)
        }
        let deadline = monotonicMilliseconds() + Int64(max(0, timeoutMilliseconds))
        var sent = 0
        while sent < bytes.count {
            // fds go with the first chunk only; once any byte is out, they are delivered.
            let attached = sent == 0 ? fds : []
            let result = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return -Int(EINVAL) }
                return attached.withUnsafeBufferPointer { fdPointer -> Int in
                    spindle_send_with_fds(fd, base + sent, raw.count - sent, fdPointer.baseAddress,
                                          Int32(attached.count))
                }
            }
            if result > 0 {
                sent += result
                continue
            }
            let code = Int32(truncatingIfNeeded: -result)
            guard result < 0, code == EAGAIN || code == EWOULDBLOCK else {
                if result == 0 { throw .socketError(errno: EIO) }
                if code == EPIPE || code == ECONNRESET { throw .peerClosed }
                throw .socketError(errno: code)
            }
            try waitUntilWritable(fd: fd, deadline: deadline)
        }
    }

    /// Sends `message` (its encoded header and payload, and its fds).
    public static func sendMessage(fd: Int32, message: VhostUserMessage,
                                   timeoutMilliseconds: Int32 = defaultSendTimeoutMilliseconds) throws(VhostUserSendError) {
        try sendMessage(fd: fd, bytes: message.encoded, fds: message.fds, timeoutMilliseconds: timeoutMilliseconds)
    }

    private static func waitUntilWritable(fd: Int32, deadline: Int64) throws(VhostUserSendError) {
        while true {
            let remaining = deadline - monotonicMilliseconds()
            guard remaining > 0 else { throw .timedOut }
            var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&descriptor, 1, Int32(clamping: remaining))
            if ready > 0 { return }  // writable, or an error the next send will report
            if ready == 0 { throw .timedOut }
            let code = errno
            if code != EINTR { throw .socketError(errno: code) }
        }
    }

    private static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}

/// Why `VhostUserSocket.sendMessage` failed. The connection should be closed.
public enum VhostUserSendError: Error, Sendable, Hashable, CustomStringConvertible {
    /// EPIPE / ECONNRESET: the front-end has gone.
    case peerClosed
    case socketError(errno: Int32)
    /// The socket stayed full for the whole timeout.
    case timedOut
    case tooManyFileDescriptors(Int)

    public var description: String {
        switch self {
        case .peerClosed:
            "front-end closed the connection before the message could be sent"
        case .socketError(let code):
            "sending on the vhost-user socket failed: \(describeErrno(code))"
        case .timedOut:
            "timed out waiting for the vhost-user socket to accept a message"
        case .tooManyFileDescriptors(let count):
            "cannot send \(count) file descriptors in one message (at most \(VhostUserMessageReader.maxFDsPerMessage))"
        }
    }
}
