import NIOCore
import NIOHTTP1
import NIOPosix

/// Answers one HTTP/1 connection: `GET /metrics` (or HEAD) with the page, 404 elsewhere, 405
/// for other methods on /metrics. NIO's server pipeline parses the requests and holds a
/// pipelined one back until the answer before it is written. The page is made on the thread
/// pool (it waits for the control thread), so the event loop keeps accepting and answering.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private let scrape: @Sendable () -> [UInt8]
    private let pool: NIOThreadPool
    private var request: HTTPRequestHead?

    init(pool: NIOThreadPool, scrape: @escaping @Sendable () -> [UInt8]) {
        self.pool = pool
        self.scrape = scrape
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break  // a scrape has no body; anything sent is ignored
        case .end:
            guard let head = request else { return }
            request = nil
            answer(head, context: context)
        }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" else {
            return respond(head, status: .notFound, body: Array("Spindle serves metrics at /metrics only\n".utf8), context: context)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return respond(head, status: .methodNotAllowed, body: Array("use GET /metrics\n".utf8),
                           extraHeaders: [("Allow", "GET, HEAD")], context: context)
        }
        pool.runIfActive(eventLoop: context.eventLoop, scrape).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let page):
                self.respond(head, status: .ok, body: page, contentType: Self.contentType, context: context)
            case .failure:
                // The pool is gone: the daemon is shutting down.
                self.respond(head, status: .serviceUnavailable, body: Array("spindle is shutting down\n".utf8), context: context)
            }
        }
    }

    private func respond(_ request: HTTPRequestHead, status: HTTPResponseStatus, body: [UInt8],
                         contentType: String = "text/plain; charset=utf-8", extraHeaders: [(String, String)] = [],
                         context: ChannelHandlerContext) {
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", "\(body.count)")] + extraHeaders)
        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let keepAlive = request.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
