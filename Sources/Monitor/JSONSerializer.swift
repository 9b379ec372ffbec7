/// Writes JSON the way QEMU's monitor does: `": "` and `", "` separators on one line, or
/// QEMU's pretty form (four-space indents); every non-ASCII character escaped as `\uXXXX`
/// (upper-case hex, surrogate pairs above the BMP) so the output is plain ASCII.
public struct JSONSerializer: Sendable {
    public var pretty: Bool

    public init(pretty: Bool = false) { self.pretty = pretty }

    /// The value's text, without a line terminator.
    public func serialize(_ value: JSONValue) -> String {
        var output: [UInt8] = []
        write(value, depth: 0, into: &output)
        return String(decoding: output, as: UTF8.self)
    }

    /// One QMP message: the value followed by "\r\n" (QEMU's monitor turns every "\n" into
    /// "\r\n", which in the pretty form also separates the lines).
    public func message(_ value: JSONValue) -> [UInt8] {
        var output: [UInt8] = []
        write(value, depth: 0, into: &output)
        output += [0x0D, 0x0A]
        return output
    }

    private func newline(depth: Int, into output: inout [UInt8]) {
        output += [0x0D, 0x0A]
        output += [UInt8](repeating: 0x20, count: 4 * depth)
    }

    private func write(_ value: JSONValue, depth: Int, into output: inout [UInt8]) {
        switch value {
        case .null: output += Array("null".utf8)
        case .bool(let flag): output += Array((flag ? "true" : "false").utf8)
        case .number(let text): output += Array(text.utf8)
        case .string(let text): Self.writeString(text, into: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")); if !pretty { output.append(0x20) } }
                if pretty { newline(depth: depth + 1, into: &output) }
                write(element, depth: depth + 1, into: &output)
            }
            if pretty { newline(depth: depth, into: &output) }
            output.append(UInt8(ascii: "]"))
        case .object(let object):
            output.append(UInt8(ascii: "{"))
            for (index, entry) in object.entries.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")); if !pretty { output.append(0x20) } }
                if pretty { newline(depth: depth + 1, into: &output) }
                Self.writeString(entry.key, into: &output)
                output += [UInt8(ascii: ":"), 0x20]
                write(entry.value, depth: depth + 1, into: &output)
            }
            if pretty { newline(depth: depth, into: &output) }
            output.append(UInt8(ascii: "}"))
        }
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    private static func writeString(_ text: String, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case "\\": output += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case "\u{08}": output += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
            case "\u{0C}": output += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
            case "\n": output += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case "\r": output += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case "\t": output += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            default:
                let code = scalar.value
                if code >= 0x20 && code < 0x7F {
                    output.append(UInt8(code))
                } else if code < 0x10000 {
                    writeEscape(UInt16(code), into: &output)
                } else {
                    let offset = code - 0x10000
                    writeEscape(UInt16(0xD800 + (offset >> 10)), into: &output)
                    writeEscape(UInt16(0xDC00 + (offset & 0x3FF)), into: &output)
                }
            }
        }
        output.append(UInt8(ascii: "\""))
    }

    private static func writeEscape(_ unit: UInt16, into output: inout [UInt8]) {
        output += [UInt8(ascii: "\\"), UInt8(ascii: "u")]
        for shift in stride(from: 12, through: 0, by: -4) {
            output.append(hexDigits[Int((unit >> UInt16(shift)) & 0xF)])
        }
    }
}
