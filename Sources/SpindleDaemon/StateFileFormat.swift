import Monitor
import SpindleOptions

/// The state file's text: one JSON object, one entry per line, ending with a CRC-32 of every
/// byte before it, so a truncated or altered file is recognised before anything is applied:
///
///     {"spindle-state": 1, "generation": 4, "entries": [
///     {"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "io1"}},
///     {"execute": "blockdev-add", "arguments": {...}}
///     ], "crc32": "1c291ca3"}
///
/// The CRC is zlib's CRC-32 of the bytes before `, "crc32": ` (python3: zlib.crc32).
enum StateFileFormat {
    static let version = 1
    private static let checksumPrefix = Array(#", "crc32": ""#.utf8)
    /// `, "crc32": "` + 8 hex digits + `"}` + newline.
    private static let trailerLength = checksumPrefix.count + 8 + 3

    static func serialize(_ entries: [StateEntry], generation: UInt64) -> [UInt8] {
        let serializer = JSONSerializer()
        var text = #"{"spindle-state": \#(version), "generation": \#(generation), "entries": ["#
        for (index, entry) in entries.enumerated() {
            let value = JSONValue.object(["execute": .string(entry.command), "arguments": .object(entry.arguments)])
            text += (index == 0 ? "\n" : ",\n") + serializer.serialize(value)
        }
        text += entries.isEmpty ? "]" : "\n]"
        var bytes = Array(text.utf8)
        bytes += checksumPrefix + Array(hex(CRC32.checksum(bytes)).utf8) + Array("\"}\n".utf8)
        return bytes
    }

    struct Contents: Sendable, Equatable {
        var generation: UInt64
        var entries: [StateEntry]
    }

    /// Checks the checksum, then the structure; the error says what is wrong for the operator.
    static func parse(_ bytes: [UInt8]) throws(StateFileError) -> Contents {
        guard bytes.count > trailerLength else {
            throw StateFileError("it is truncated or not a Spindle state file (\(bytes.count) bytes, no checksum at its end)")
        }
        let bodyEnd = bytes.count - trailerLength
        let trailer = bytes[bodyEnd...]
        guard trailer.starts(with: checksumPrefix), trailer.suffix(3).elementsEqual(Array("\"}\n".utf8)),
              let stored = UInt32(String(decoding: trailer.dropFirst(checksumPrefix.count).prefix(8), as: UTF8.self), radix: 16) else {
            throw StateFileError("it is truncated or not a Spindle state file (no checksum at its end)")
        }
        let computed = CRC32.checksum(bytes[..<bodyEnd])
        guard computed == stored else {
            throw StateFileError("its checksum does not match (stored \(hex(stored)), computed \(hex(computed))): the file is corrupt")
        }
        let value: JSONValue
        do {
            value = try JSONText.parse(bytes)
        } catch {
            throw StateFileError("\(error)")
        }
        guard case .object(let top) = value, case .number(let versionText)? = top["spindle-state"] else {
            throw StateFileError("it has no \"spindle-state\" version member")
        }
        guard versionText == String(version) else {
            throw StateFileError("it has format version \(versionText); this spindle reads version \(version)")
        }
        guard case .number(let generationText)? = top["generation"], let generation = UInt64(generationText),
              case .array(let list)? = top["entries"] else {
            throw StateFileError("it lacks \"generation\" or \"entries\"")
        }
        var entries: [StateEntry] = []
        for (index, item) in list.enumerated() {
            guard case .object(let object) = item, case .string(let command)? = object["execute"],
                  case .object(let arguments)? = object["arguments"] ?? .object(JSONObject()) else {
                throw StateFileError("entry \(index) is not {\"execute\": COMMAND, \"arguments\": {...}}")
            }
            guard StateRecordingRule.table[command] != nil else {
                throw StateFileError("entry \(index) (\(command)): not a command the state file records")
            }
            entries.append(StateEntry(command: command, arguments: arguments))
        }
        return Contents(generation: generation, entries: entries)
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}

/// zlib's CRC-32 (polynomial 0xEDB88320), so operators can check a file with standard tools.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? (value >> 1) ^ 0xEDB8_8320 : value >> 1 }
        return value
    }

    static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}

struct StateFileError: Error, Sendable, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
