import CSpindle
import ControlThread
import Glibc
import Logging

/// A QMP monitor listening on a Unix socket: any number of clients, each greeted, negotiated
/// and served independently; events are broadcast to every negotiated client.
@ControlActor
public final class QMPServer {
    /// The longest request accepted (QEMU allows far more; 1 MiB is generous for any command).
    public static let defaultMessageLimit = 1 << 20

    public nonisolated let path: String
    private let listener: UnixListener
    private var listenerWatch: FileDescriptorWatch?
    private var clients: [ObjectIdentifier: QMPClientConnection] = [:]
    private let dispatcher: QMPCommandDispatcher
    private let serializer: JSONSerializer
    private let messageLimit: Int
    private let logger = Logger(label: "spindle.qmp")
    private var firstClientWaiters: [CheckedContinuation<Void, Never>] = []
    private var hadClient = false

    /// Starts listening at `path` (a stale socket there is replaced; any other file is refused).
    /// The server keeps a weak reference to `target`; `pretty` indents messages as QEMU's
    /// `--monitor pretty=on` does.
    public init(path: String, target: any MonitorCommandTarget, pretty: Bool = false,
                identity: QMPIdentity = .spindle,
                messageLimit: Int = QMPServer.defaultMessageLimit) throws(QMPServerError) {
        self.path = path
        do {
            self.listener = try UnixListener(path: path, what: "monitor socket", pathOption: "monitor socket path")
        } catch {
            throw QMPServerError(error.description)
        }
        self.dispatcher = QMPCommandDispatcher(target: target, identity: identity)
        self.serializer = JSONSerializer(pretty: pretty)
        self.messageLimit = messageLimit
        do {
            listenerWatch = try ControlExecutor.shared.watch(fd: listener.fd, events: EPOLLIN.rawValue) { [weak self] _ in
                self?.acceptClients()
            }
        } catch {
            listener.close()
            throw QMPServerError("cannot watch monitor socket '\(path)': \(error)")
        }
    }

    /// The number of connected clients.
    public var clientCount: Int { clients.count }

    /// Sends `{"timestamp": ..., "event": NAME, "data": DATA}` to every negotiated client
    /// (`data` is left out when nil, as QEMU does for events without data).
    public func emit(event: String, data: JSONValue? = nil) {
        let message = QMPMessages.event(event, data: data, at: QMPMessages.now())
        for client in clients.values where client.receivesEvents { client.send(message) }
    }

    /// Returns once a client has connected (at once if one already has): QEMU's `wait=on`.
    public func waitForFirstClient() async {
        if hadClient { return }
        await withCheckedContinuation { firstClientWaiters.append($0) }
    }

    /// Disconnects every client, stops listening and removes the socket.
    public func close() {
        if let listenerWatch {
            ControlExecutor.shared.unwatch(listenerWatch)
            self.listenerWatch = nil
            listener.close()
        }
        for client in Array(clients.values) { client.close() }
        clients.removeAll()
        resumeFirstClientWaiters()
    }

    private func acceptClients() {
        while let fd = listener.accept() {
            let client = QMPClientConnection(fd: fd, dispatcher: dispatcher, serializer: serializer,
                                             messageLimit: messageLimit, logger: logger) { [weak self] closed in
                self?.clients[ObjectIdentifier(closed)] = nil
            }
            do {
                try client.start()
                clients[ObjectIdentifier(client)] = client
                logger.debug("QMP client connected on \(path)")
            } catch {
                logger.warning("cannot serve a QMP client on \(path): \(error)")
                Glibc.close(fd)
            }
            hadClient = true
            resumeFirstClientWaiters()
        }
    }

    private func resumeFirstClientWaiters() {
        let waiters = firstClientWaiters
        firstClientWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }
}
