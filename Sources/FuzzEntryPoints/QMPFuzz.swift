import Monitor
import SpindleOptions

/// Input: bytes a QMP client sends. They go through the monitor's framer (in two pieces, to
/// exercise messages split across reads), the JSON parser and the request envelope check;
/// options-shaped commands also through the option parsers the real commands use. Checks
/// that JSON serialised by the monitor parses back to the same value.
func fuzzQMP(_ input: UnsafeRawBufferPointer) {
    let bytes = [UInt8](input)
    let split = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    let frames = QMPFuzzHooks.frames([bytes[..<split], bytes[split...]])
    for message in frames {
        guard let value = try? JSONText.parse(message, singleQuotedStrings: true) else { continue }
        let text = Array(JSONSerializer().serialize(value).utf8)
        guard let again = try? JSONText.parse(text) else {
            preconditionFailure("serialised JSON does not parse: \(String(decoding: text, as: UTF8.self))")
        }
        precondition(again == value, "JSON changed through serialise + parse")
        guard let (command, arguments) = QMPFuzzHooks.request(value) else { continue }
        switch command {
        case "blockdev-add": _ = try? blockdevOptions(fromJSONObject: arguments)
        case "block-export-add": _ = try? exportOptions(fromJSONObject: arguments)
        case "object-add":
            _ = try? iothreadObjectOptions(fromJSONObject: arguments)
            _ = try? objectOptions(fromJSONObject: arguments)
        case "qom-set":
            if case .object(let value)? = arguments["value"] { _ = try? throttleLimits(fromJSONObject: value) }
        default: break
        }
    }
}
