import Glibc
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SpindleOptions

/// The `--metrics` HTTP endpoint: one NIO event-loop thread accepts and answers; one pool
/// thread makes each page (`scrape`, which may block on the control thread). Started and
/// stopped by the executable's main thread; nothing on the IOThreads knows of it.
public final class MetricsServer: Sendable {
    public let address: MetricsAddress
    private let group: MultiThreadedEventLoopGroup
    private let pool: NIOThreadPool
    private let listener: any Channel

    /// Binds and starts serving. Errors are one line naming the option and the address.
    public static func start(_ options: MetricsEndpointOptions,
                             scrape: @escaping @Sendable () -> [UInt8]) throws(MetricsServerError) -> MetricsServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(pool: pool, scrape: scrape))
                }
            }
        do {
            let listener: any Channel
            switch options.address {
            case .inet(let host, let port):
                listener = try bootstrap.bind(host: host, port: port).wait()
            case .unix(let path):
                listener = try bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).wait()
                chmod(path, 0o600)  // owner-only, as the QMP socket
            }
            Logger(label: "spindle.metrics").info("serving Prometheus metrics at \(Self.url(options.address))")
            return MetricsServer(address: options.address, group: group, pool: pool, listener: listener)
        } catch {
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
            throw MetricsServerError(address: options.address, reason: Self.describe(error))
        }
    }

    private init(address: MetricsAddress, group: MultiThreadedEventLoopGroup, pool: NIOThreadPool, listener: any Channel) {
        self.address = address
        self.group = group
        self.pool = pool
        self.listener = listener
    }

    /// The port actually bound (for inet addresses).
    public var boundPort: Int? { listener.localAddress?.port }

    /// Closes the listener and every connection, waits for a page being made, and removes a
    /// UNIX socket path. Call before the daemon shuts down (a page waits for the control thread).
    public func stop() {
        try? listener.close().wait()
        // The pool first: a page being made is still answered on the running event loop;
        // a request after this gets 503.
        try? pool.syncShutdownGracefully()
        try? group.syncShutdownGracefully()
        if case .unix(let path) = address { unlink(path) }
    }

    private static func url(_ address: MetricsAddress) -> String {
        switch address {
        case .inet: return "http://\(address)/metrics"
        case .unix(let path): return "\(path) (UNIX socket), GET /metrics"
        }
    }

    private static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) }
        return "\(error)"
    }
}

/// `--metrics` could not listen: `--metrics addr.type=inet: cannot listen on 127.0.0.1:9109: Address already in use (...)`.
public struct MetricsServerError: Error, CustomStringConvertible {
    public let address: MetricsAddress
    public let reason: String

    public var description: String {
        switch address {
        case .inet:
            return "--metrics addr.type=inet: cannot listen on \(address): \(reason) (pick a free port, or stop what listens there)"
        case .unix:
            return "--metrics addr.type=unix: cannot listen on '\(address)': \(reason) (pick a path in a writable directory, not an existing file)"
        }
    }
}
