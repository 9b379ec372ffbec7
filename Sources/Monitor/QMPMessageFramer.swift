/// Splits a client's byte stream into JSON messages the way QEMU's streaming lexer does:
/// a message ends when its outermost `{...}` or `[...]` closes, so messages may be separated by
/// newlines, by spaces, or by nothing, and one message may span several lines or reads.
///
/// Only brackets and strings are tracked here; the parser judges the message itself. A raw
/// control character inside a string (e.g. an unterminated string at the end of a line) ends
/// the message at once, as QEMU's lexer does, so a typo never swallows later lines.
/// A message longer than `limit` is reported as `.tooLong` and the rest of its line dropped.
struct QMPMessageFramer {
    enum Frame: Equatable {
        case message([UInt8])
        case tooLong
    }

    let limit: Int
    private var current: [UInt8] = []
    private var depth = 0
    private var quote: UInt8? = nil
    private var escaped = false
    private var discardingLine = false

    init(limit: Int) { self.limit = limit }

    /// Whether a message has started but not ended.
    var hasPartialMessage: Bool { !current.isEmpty }

    mutating func feed<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> [Frame] {
        var frames: [Frame] = []
        for byte in bytes {
            if discardingLine {
                if byte == UInt8(ascii: "\n") { discardingLine = false }
                continue
            }
            consume(byte, into: &frames)
            if current.count > limit {
                frames.append(.tooLong)
                reset()
                discardingLine = byte != UInt8(ascii: "\n")
            }
        }
        return frames
    }

    private mutating func consume(_ byte: UInt8, into frames: inout [Frame]) {
        if let quote {
            current.append(byte)
            if byte < 0x20 {
                finish(into: &frames)
            } else if escaped {
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == quote {
                self.quote = nil
                if depth == 0 { finish(into: &frames) }
            }
            return
        }
        switch byte {
        case 0x20, 0x09, 0x0A, 0x0D:
            guard !current.isEmpty else { return }
            if depth == 0 { finish(into: &frames) } else { current.append(byte) }
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            if depth == 0 && !current.isEmpty { finish(into: &frames) }  // a bare word before it
            current.append(byte)
            depth += 1
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            if depth == 0 {
                // A stray closer: a message of its own, which the parser rejects.
                if !current.isEmpty { finish(into: &frames) }
                current.append(byte)
                finish(into: &frames)
            } else {
                current.append(byte)
                depth -= 1
                if depth == 0 { finish(into: &frames) }
            }
        case UInt8(ascii: "\""), UInt8(ascii: "'"):
            if depth == 0 && !current.isEmpty { finish(into: &frames) }
            current.append(byte)
            quote = byte
        default:
            current.append(byte)
        }
    }

    private mutating func finish(into frames: inout [Frame]) {
        frames.append(.message(current))
        reset()
    }

    private mutating func reset() {
        current.removeAll(keepingCapacity: current.count <= 4096)
        depth = 0
        quote = nil
        escaped = false
    }
}
