import CSpindle
import ControlThread
import Glibc
import Logging
import SpindleOptions

/// One monitor client: reads requests, runs them one at a time in the order received, and
/// writes replies and events without ever blocking the control thread.
///
/// Reading pauses while `maximumQueuedRequests` are waiting (the rest stays in the kernel's
/// buffer, so a client that floods cannot grow our memory); output that the client does not
/// read piles up to `maximumBufferedOutput`, and then the client is dropped.
@ControlActor
final class QMPClientConnection {
    static let maximumQueuedRequests = 8
    static let maximumBufferedOutput = 8 << 20
    static let readChunk = 64 << 10

    let fd: Int32
    private var watch: FileDescriptorWatch?
    private var framer: QMPMessageFramer
    private var queued: [QMPMessageFramer.Frame] = []
    private var queueHead = 0
    private var commandRunning = false
    private var negotiated = false
    /// The client shut down its sending side: answer what was received, then close.
    private var readClosed = false
    private var output: [UInt8] = []
    private var outputSent = 0
    private(set) var isClosed = false
    private var interest: UInt32 = 0

    private let dispatcher: QMPCommandDispatcher
    private let serializer: JSONSerializer
    private let logger: Logger
    private let onClose: @ControlActor (QMPClientConnection) -> Void

    init(fd: Int32, dispatcher: QMPCommandDispatcher, serializer: JSONSerializer, messageLimit: Int,
         logger: Logger, onClose: @escaping @ControlActor (QMPClientConnection) -> Void) {
        self.fd = fd
        self.dispatcher = dispatcher
        self.serializer = serializer
        self.framer = QMPMessageFramer(limit: messageLimit)
        self.logger = logger
        self.onClose = onClose
    }

    /// Sends the greeting and starts reading.
    func start() throws(ControlLoopError) {
        interest = EPOLLIN.rawValue
        watch = try ControlExecutor.shared.watch(fd: fd, events: interest) { [weak self] events in
            self?.handle(events: events)
        }
        send(QMPMessages.greeting(dispatcher.identity))
    }

    /// Events go only to clients that finished negotiation, as in QEMU.
    var receivesEvents: Bool { negotiated && !isClosed }

    func send(_ message: JSONValue) {
        guard !isClosed else { return }
        output += serializer.message(message)
        flush()
        if output.count - outputSent > Self.maximumBufferedOutput {
            logger.warning("QMP client on fd \(fd) stopped reading its replies and events; disconnecting it")
            close()
        }
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        if let watch { ControlExecutor.shared.unwatch(watch) }
        watch = nil
        Glibc.close(fd)
        queued.removeAll()
        queueHead = 0
        output.removeAll()
        outputSent = 0
        onClose(self)
    }

    // MARK: events from the control loop

    private func handle(events: UInt32) {
        if events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
            // The peer closed its socket: replies can no longer reach it, so, like QEMU, drop
            // its queued requests (a command already running still completes).
            close()
            return
        }
        if events & EPOLLOUT.rawValue != 0 { flush() }
        if events & EPOLLIN.rawValue != 0 { readAvailable() }
        processQueue()
    }

    private func readAvailable() {
        var buffer = [UInt8](repeating: 0, count: Self.readChunk)
        // A few chunks per wakeup keeps one busy client from starving the others; epoll is
        // level-triggered, so the rest is read on the next round.
        for _ in 0..<4 where wantsInput {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                queued += framer.feed(buffer[0..<count])
            } else if count == 0 {
                readClosed = true
                return
            } else {
                if errno == EINTR { continue }
                if errno != EAGAIN && errno != EWOULDBLOCK { close() }
                return
            }
        }
    }

    private var wantsInput: Bool {
        !isClosed && !readClosed && queued.count - queueHead < Self.maximumQueuedRequests
    }

    // MARK: requests

    private func processQueue() {
        while !isClosed, !commandRunning, queueHead < queued.count {
            let frame = queued[queueHead]
            queueHead += 1
            switch frame {
            case .tooLong:
                send(QMPMessages.failure(QMPError("JSON parse error, message longer than \(framer.limit) bytes; the rest of its line was ignored"), id: nil))
            case .message(let bytes):
                handleMessage(bytes)
            }
        }
        if queueHead == queued.count {
            queued.removeAll(keepingCapacity: true)
            queueHead = 0
        }
        finishIfDone()
        updateInterest()
    }

    private func handleMessage(_ bytes: [UInt8]) {
        let request: QMPRequest
        do throws(QMPRequest.Rejection) {
            let value: JSONValue
            do {
                value = try JSONText.parse(bytes, singleQuotedStrings: true)
            } catch {
                throw QMPRequest.Rejection(error: QMPError("JSON parse error, \(error.reason)"), id: nil)
            }
            request = try QMPRequest(value)
        } catch {
            send(QMPMessages.failure(error.error, id: error.id))
            return
        }
        if request.command == "qmp_capabilities" {
            reply(to: request, with: Result { () throws(QMPError) in try negotiate(request.arguments) })
            return
        }
        guard negotiated else {
            send(QMPMessages.failure(QMPError(.commandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'"), id: request.id))
            return
        }
        // Commands run one at a time, so replies keep the order of the requests.
        commandRunning = true
        let dispatcher = self.dispatcher
        Task {
            let result: Result<JSONValue, QMPError>
            do throws(QMPError) {
                result = .success(try await dispatcher.runAndRecord(request))
            } catch {
                result = .failure(error)
            }
            self.commandRunning = false
            self.reply(to: request, with: result)
            if request.command == "quit", case .success = result { dispatcher.target?.quit() }
            self.processQueue()
        }
    }

    private func negotiate(_ arguments: JSONObject) throws(QMPError) -> JSONValue {
        enum Capability: String { case oob }
        var reader = CommandArguments(arguments)
        let enable = try reader.optionalEnumList("enable", Capability.self) ?? []
        try reader.finish()
        guard !negotiated else {
            throw QMPError(.commandNotFound, "Capabilities negotiation is already complete, command ignored")
        }
        if let capability = enable.first {
            throw QMPError("Capability '\(capability.rawValue)' not available")
        }
        negotiated = true
        return .emptyObject
    }

    private func reply(to request: QMPRequest, with result: Result<JSONValue, QMPError>) {
        switch result {
        case .success(let value): send(QMPMessages.success(value, id: request.id))
        case .failure(let error): send(QMPMessages.failure(error, id: request.id))
        }
    }

    // MARK: output

    private func flush() {
        while !isClosed, outputSent < output.count {
            let start = outputSent
            let count = output.withUnsafeBytes { bytes -> Int in
                guard let base = bytes.baseAddress else { return 0 }
                return Glibc.send(fd, base + start, bytes.count - start, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if count > 0 {
                outputSent += count
            } else if count < 0 && errno == EINTR {
                continue
            } else if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                break
            } else {
                close()  // EPIPE, ECONNRESET: the client is gone
                return
            }
        }
        if outputSent == output.count {
            output.removeAll(keepingCapacity: output.count <= 65536)
            outputSent = 0
        }
        finishIfDone()
        updateInterest()
    }

    /// After the client's EOF: close once every request is answered and the output written.
    private func finishIfDone() {
        if readClosed, !isClosed, !commandRunning, queueHead == queued.count, output.isEmpty { close() }
    }

    private func updateInterest() {
        guard !isClosed, let watch else { return }
        var wanted: UInt32 = 0
        if wantsInput { wanted |= EPOLLIN.rawValue }
        if outputSent < output.count { wanted |= EPOLLOUT.rawValue }
        if wanted != interest {
            interest = wanted
            ControlExecutor.shared.modify(watch, events: wanted)
        }
    }
}
