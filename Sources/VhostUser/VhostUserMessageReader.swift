import CSpindle
#if canImport(Glibc)
import Glibc
#endif

/// Cuts the byte stream of a non-blocking vhost-user socket into messages.
///
/// Call `readAvailable()` whenever the socket is readable. It returns the messages that
/// became complete, in order, and — after them — why the stream ended, if it did. A
/// message that has only partly arrived is kept until the next call.
///
/// File descriptors: fds arriving with a message's bytes belong to that message. The
/// reader never reads past the message it is assembling (first exactly the 12 header
/// bytes, then exactly the payload), because a Unix stream socket may hand over the next
/// message's fds together with bytes of the current one if asked for more. Returned
/// messages own their fds; fds of an unfinished message are closed when the stream ends
/// or the reader is deinitialised.
///
/// Not thread-safe: use a reader from one thread (the connection's event loop).
public final class VhostUserMessageReader {
    /// The largest payload accepted by default. The biggest message Spindle expects is a
    /// config-space access (268 bytes) or a full memory table (264 bytes); 4 KiB leaves
    /// room for future messages while bounding what a misbehaving peer can make us buffer.
    public static let defaultMaxPayloadSize = 4096 + 256
    /// Most fds any message carries: one per memory-table region.
    public static let maxFDsPerMessage = VhostUserMemoryTable.maxRegions

    /// Messages returned by one `readAvailable()` call at most, so one chatty connection
    /// cannot monopolise its thread.
    public static let defaultMessageBudget = 64

    /// The socket read from; not owned (the reader never closes it).
    public let socket: Int32
    public let maxPayloadSize: Int

    private var headerBuffer = [UInt8](repeating: 0, count: VhostUserHeader.size)
    private var headerFilled = 0
    private var header: VhostUserHeader?
    private var payload: [UInt8] = []
    private var payloadFilled = 0
    private var fds: [Int32] = []
    private var ended: VhostUserStreamEnd?

    public init(socket: Int32, maxPayloadSize: Int = VhostUserMessageReader.defaultMaxPayloadSize) {
        self.socket = socket
        self.maxPayloadSize = max(0, maxPayloadSize)
    }

    deinit {
        closeAll(fds)
    }

    /// What one `readAvailable()` call produced.
    public struct ReadResult: Sendable {
        /// Complete messages in arrival order; each owns its fds.
        public var messages: [VhostUserMessage]
        /// Set if the stream ended after those messages; the connection should be closed
        /// once they have been dealt with. Further calls report the same end.
        public var end: VhostUserStreamEnd?
        /// The message budget ran out before the socket would block: call again (a
        /// level-triggered poller will report the socket readable again anyway).
        public var moreMayBeAvailable: Bool
    }

    /// Reads until the socket would block (EAGAIN), the stream ends, or `messageBudget`
    /// messages are complete.
    public func readAvailable(messageBudget: Int = VhostUserMessageReader.defaultMessageBudget) -> ReadResult {
        var result = ReadResult(messages: [], end: ended, moreMayBeAvailable: false)
        guard ended == nil else { return result }
        while true {
            if result.messages.count >= max(1, messageBudget) {
                result.moreMayBeAvailable = true
                return result
            }
            switch readStep() {
            case .wouldBlock:
                return result
            case .progress:
                continue
            case .message(let message):
                result.messages.append(message)
            case .end(let end):
                finish(end)
                result.end = end
                return result
            }
        }
    }

    /// Bytes of an unfinished message currently buffered (0 between messages).
    public var bufferedByteCount: Int { headerFilled + payloadFilled }

    // MARK: - Reading

    private enum Step {
        case wouldBlock
        case progress
        case message(VhostUserMessage)
        case end(VhostUserStreamEnd)
    }

    /// One recvmsg for the rest of the header or the payload, or completion of a message
    /// whose payload is already all there.
    private func readStep() -> Step {
        if let header, payloadFilled == payload.count {
            return .message(takeMessage(header))
        }
        let received: ReceiveOutcome
        if header == nil {
            received = receive(into: &headerBuffer, from: headerFilled)
        } else {
            received = receive(into: &payload, from: payloadFilled)
        }
        switch received {
        case .wouldBlock:
            return .wouldBlock
        case .failed(let code):
            return .end(.socketError(errno: code))
        case .endOfFile:
            let buffered = bufferedByteCount
            return .end(buffered == 0 ? .peerClosed : .peerClosedMidMessage(bytesReceived: buffered))
        case .tooManyFDs:
            return .end(.protocolError(VhostUserProtocolError(
                request: header?.request,
                "more than \(Self.maxFDsPerMessage) file descriptors came with one message")))
        case .bytes(let count):
            if header == nil {
                headerFilled += count
                if headerFilled == VhostUserHeader.size { return startPayload() }
            } else {
                payloadFilled += count
            }
            return .progress
        }
    }

    /// The header is complete: check the payload size and make room for it.
    private func startPayload() -> Step {
        guard let parsed = VhostUserHeader(bytes: headerBuffer) else {
            return .end(.protocolError(VhostUserProtocolError(request: nil, "could not parse a message header")))
        }
        guard Int(parsed.size) <= maxPayloadSize else {
            return .end(.protocolError(VhostUserProtocolError(
                request: parsed.request,
                "payload of \(parsed.size) bytes exceeds the limit of \(maxPayloadSize) bytes")))
        }
        header = parsed
        payload = [UInt8](repeating: 0, count: Int(parsed.size))
        payloadFilled = 0
        return .progress
    }

    private func takeMessage(_ header: VhostUserHeader) -> VhostUserMessage {
        let message = VhostUserMessage(header: header, payload: payload, fds: fds)
        self.header = nil
        headerFilled = 0
        payload = []
        payloadFilled = 0
        fds = []
        return message
    }

    /// The stream is over: drop the unfinished message and its fds.
    private func finish(_ end: VhostUserStreamEnd) {
        ended = end
        closeAll(fds)
        fds = []
        header = nil
        headerFilled = 0
        payload = []
        payloadFilled = 0
    }

    private enum ReceiveOutcome {
        case bytes(Int)
        case wouldBlock
        case endOfFile
        case failed(errno: Int32)
        case tooManyFDs
    }

    /// recvmsg into `buffer[start...]`, collecting fds into `self.fds`.
    private func receive(into buffer: inout [UInt8], from start: Int) -> ReceiveOutcome {
        let wanted = buffer.count - start
        guard wanted > 0, start >= 0 else { return .bytes(0) }
        let fdRoom = max(0, Self.maxFDsPerMessage - fds.count)
        var fdBuffer = [Int32](repeating: -1, count: Self.maxFDsPerMessage)
        var fdCount: Int32 = 0
        var truncated: Int32 = 0
        let result = buffer.withUnsafeMutableBytes { bytes -> Int in
            guard let base = bytes.baseAddress else { return -Int(EINVAL) }
            return fdBuffer.withUnsafeMutableBufferPointer { fdPointer -> Int in
                spindle_recv_with_fds(socket, base + start, wanted, fdPointer.baseAddress,
                                      Int32(fdRoom), &fdCount, &truncated)
            }
        }
        // Keep whatever fds arrived, even on the error paths below, so they get closed.
        let arrived = min(max(0, Int(fdCount)), fdBuffer.count)
        fds.append(contentsOf: fdBuffer[0..<arrived])
        if result < 0 {
            let code = Int32(truncatingIfNeeded: -result)
            return code == EAGAIN || code == EWOULDBLOCK ? .wouldBlock : .failed(errno: code)
        }
        if truncated != 0 { return .tooManyFDs }
        if result == 0 { return .endOfFile }
        return .bytes(min(result, wanted))
    }
}
