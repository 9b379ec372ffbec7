/// Where and why a JSON text is malformed.
public struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Byte offset into the text.
    public var offset: Int
    public var reason: String
    public var description: String { "invalid JSON at offset \(offset): \(reason)" }
}

/// Public entry point to the JSON reader (used by the QMP monitor).
public enum JSONText {
    /// Parses `bytes`, which must hold exactly one JSON value. `singleQuotedStrings` accepts
    /// QEMU's extension `'text'` (QMP clients may use it).
    public static func parse(_ bytes: [UInt8], singleQuotedStrings: Bool = false) throws(JSONSyntaxError) -> OptionValue {
        var parser = JSONParser(option: "")
        parser.allowsSingleQuotes = singleQuotedStrings
        return try parser.parseValue(bytes)
    }
}

/// A small strict JSON reader for the `{...}` form of options, producing an `OptionObject`.
///
/// Like QEMU it rejects duplicate keys and anything after the value. Numbers are kept as text
/// so the key that reads them decides what is valid. Nesting is limited, so no input can
/// exhaust the stack.
struct JSONParser {
    var option: String
    static let maximumDepth = 32
    var allowsSingleQuotes = false

    private var bytes: [UInt8] = []
    private var position = 0

    init(option: String) { self.option = option }

    /// Parses `text`, which must hold exactly one JSON object.
    mutating func parseObject(_ text: String) throws(CommandLineError) -> OptionObject {
        let value: OptionValue
        do {
            value = try parseValue(Array(text.utf8))
        } catch {
            throw CommandLineError(option: option, error.description)
        }
        guard case .object(let object) = value else {
            throw CommandLineError(option: option, "JSON value must be an object, not \(value.typeName)")
        }
        return object
    }

    /// Parses `input`, which must hold exactly one JSON value.
    mutating func parseValue(_ input: [UInt8]) throws(JSONSyntaxError) -> OptionValue {
        bytes = input
        position = 0
        let value = try parseValue(depth: 0)
        skipWhitespace()
        guard position == bytes.count else { throw failure("unexpected text after the JSON value") }
        return value
    }

    private func failure(_ reason: String) -> JSONSyntaxError {
        JSONSyntaxError(offset: position, reason: reason)
    }

    private mutating func skipWhitespace() {
        while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
    }

    private mutating func parseValue(depth: Int) throws(JSONSyntaxError) -> OptionValue {
        guard depth < Self.maximumDepth else { throw failure("nested too deeply") }
        skipWhitespace()
        guard position < bytes.count else { throw failure("unexpected end of input") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return .object(try parseObjectBody(depth: depth))
        case UInt8(ascii: "["): return .array(try parseArrayBody(depth: depth))
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "'") where allowsSingleQuotes: return .string(try parseString())
        case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectWord("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw failure("unexpected character")
        }
    }

    private mutating func expectWord(_ word: String) throws(JSONSyntaxError) {
        let expected = Array(word.utf8)
        guard bytes.count - position >= expected.count,
              Array(bytes[position..<position + expected.count]) == expected else {
            throw failure("unexpected character")
        }
        position += expected.count
    }

    private mutating func parseObjectBody(depth: Int) throws(JSONSyntaxError) -> OptionObject {
        position += 1  // '{'
        var object = OptionObject()
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") { position += 1; return object }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") || (allowsSingleQuotes && bytes[position] == UInt8(ascii: "'")) else {
                throw failure("expected a key in double quotes")
            }
            let key = try parseString()
            guard object[key] == nil else { throw failure("duplicate key '\(key)'") }
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw failure("expected ':' after key '\(key)'") }
            position += 1
            object[key] = try parseValue(depth: depth + 1)
            skipWhitespace()
            guard position < bytes.count else { throw failure("unexpected end of input") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            if bytes[position] == UInt8(ascii: "}") { position += 1; return object }
            throw failure("expected ',' or '}'")
        }
    }

    private mutating func parseArrayBody(depth: Int) throws(JSONSyntaxError) -> [OptionValue] {
        position += 1  // '['
        var elements: [OptionValue] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") { position += 1; return elements }
        while true {
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            guard position < bytes.count else { throw failure("unexpected end of input") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            if bytes[position] == UInt8(ascii: "]") { position += 1; return elements }
            throw failure("expected ',' or ']'")
        }
    }

    /// Reads the number's text; its grammar is checked, its meaning is left to the reader.
    private mutating func parseNumber() throws(JSONSyntaxError) -> String {
        let start = position
        func digits() -> Int {
            let from = position
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
            return position - from
        }
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integerStart = position
        let integerDigits = digits()
        guard integerDigits > 0 else { throw failure("expected digits") }
        if integerDigits > 1, bytes[integerStart] == UInt8(ascii: "0") { throw failure("numbers must not have leading zeros") }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { throw failure("expected digits after '.'") }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard digits() > 0 else { throw failure("expected digits in the exponent") }
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    private mutating func parseString() throws(JSONSyntaxError) -> String {
        let quote = bytes[position]
        position += 1  // opening quote
        var scalars = String.UnicodeScalarView()
        var pendingHighSurrogate: UInt32? = nil
        var raw: [UInt8] = []  // unescaped UTF-8 bytes not yet appended
        func flushRaw() {
            scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars)
            raw.removeAll()
        }
        while true {
            guard position < bytes.count else { throw failure("unterminated string") }
            let byte = bytes[position]
            position += 1
            if byte == quote {
                guard pendingHighSurrogate == nil else { throw failure("unpaired surrogate in \\u escape") }
                flushRaw()
                return String(scalars)
            }
            guard byte >= 0x20 else { throw failure("control character in string (escape it)") }
            if byte != UInt8(ascii: "\\") {
                guard pendingHighSurrogate == nil else { throw failure("unpaired surrogate in \\u escape") }
                raw.append(byte)
                continue
            }
            flushRaw()
            guard position < bytes.count else { throw failure("unterminated string") }
            let escape = bytes[position]
            position += 1
            if escape == UInt8(ascii: "u") {
                let code = try parseHex4()
                if let high = pendingHighSurrogate {
                    guard (0xDC00...0xDFFF).contains(code) else { throw failure("unpaired surrogate in \\u escape") }
                    pendingHighSurrogate = nil
                    scalars.append(Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00))!)
                } else if (0xD800...0xDBFF).contains(code) {
                    pendingHighSurrogate = code
                } else if let scalar = Unicode.Scalar(code) {
                    scalars.append(scalar)
                } else {
                    throw failure("unpaired surrogate in \\u escape")
                }
                continue
            }
            guard pendingHighSurrogate == nil else { throw failure("unpaired surrogate in \\u escape") }
            switch escape {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "'") where allowsSingleQuotes: scalars.append("'")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            default: throw failure("invalid escape in string")
            }
        }
    }

    private mutating func parseHex4() throws(JSONSyntaxError) -> UInt32 {
        guard bytes.count - position >= 4 else { throw failure("\\u needs four hex digits") }
        var code: UInt32 = 0
        for _ in 0..<4 {
            guard let digit = Self.hexDigitValue(bytes[position]) else { throw failure("\\u needs four hex digits") }
            code = code << 4 | digit
            position += 1
        }
        return code
    }

    private static func hexDigitValue(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }
}
