/// The monitor's input stages without a socket or the control thread, for the fuzz targets
/// (Sources/FuzzEntryPoints): framing a byte stream, and checking a request envelope.
package enum QMPFuzzHooks {
    /// The messages the framer cuts from `pieces` arriving one after another (over-long
    /// messages, which the connection answers with an error, are left out; the limit is
    /// QMPServer.defaultMessageLimit).
    package static func frames(_ pieces: [ArraySlice<UInt8>], limit: Int = 1 << 20) -> [[UInt8]] {
        var framer = QMPMessageFramer(limit: limit)
        var messages: [[UInt8]] = []
        for piece in pieces {
            for case .message(let bytes) in framer.feed(piece) { messages.append(bytes) }
        }
        return messages
    }

    /// The command name and arguments of a well-formed request, or nil if it is rejected.
    package static func request(_ message: JSONValue) -> (command: String, arguments: JSONObject)? {
        guard let request = try? QMPRequest(message) else { return nil }
        return (request.command, request.arguments)
    }
}
