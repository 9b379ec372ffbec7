import BlockCommon

/// Reads typed values out of a parsed option, producing one-line errors that name the key.
///
/// Values from keyval text are strings and are converted (`on` → true, `4k` → 4096); values
/// from JSON must already have the right JSON type, as in QEMU.
struct OptionReader {
    let option: String
    /// Names the option instance in errors once known, e.g. `id=exp0`.
    var subject: String?
    let isFromKeyval: Bool
    let root: OptionObject

    init(option: String, root: OptionObject, isFromKeyval: Bool) {
        self.option = option
        self.root = root
        self.isFromKeyval = isFromKeyval
    }

    /// Parses an option value: JSON if it starts with `{`, keyval otherwise.
    init(option: String, text: String, impliedKey: String?) throws(CommandLineError) {
        if text.hasPrefix("{") {
            var parser = JSONParser(option: option)
            self.init(option: option, root: try parser.parseObject(text), isFromKeyval: false)
        } else {
            let parser = KeyValueParser(option: option, impliedKey: impliedKey)
            self.init(option: option, root: try parser.parse(text).object, isFromKeyval: true)
        }
    }

    func error(_ message: String) -> CommandLineError {
        CommandLineError(option: option, subject: subject, message)
    }

    // MARK: Key checks

    /// Fails on the first key not in `allowed` (dotted paths), listing what `context` accepts.
    func rejectUnknownKeys(allowed: [String], context: String) throws(CommandLineError) {
        // An allowed "key.*" admits any path below key (lists in keyval: key.0, key.1, ...).
        let wildcards = allowed.filter { $0.hasSuffix(".*") }.map { String($0.dropLast(1)) }
        for path in root.leafPaths where !allowed.contains(path) && !wildcards.contains(where: { path.hasPrefix($0) }) {
            // `cache=on` or JSON `"cache": true` where only `cache.*` keys exist.
            if allowed.contains(where: { $0.hasPrefix(path + ".") }) {
                let children = allowed.filter { $0.hasPrefix(path + ".") }
                throw error("'\(path)' must be an object with keys \(children.joined(separator: ", ")), not a single value")
            }
            throw error("unknown key '\(path)' (\(context) takes: \(allowed.joined(separator: ", ")))")
        }
    }

    /// The value at a dotted path, or nil if absent.
    func value(at path: String) throws(CommandLineError) -> OptionValue? {
        var current = OptionValue.object(root)
        var walked: [Substring] = []
        for fragment in path.split(separator: ".") {
            guard case .object(let object) = current else {
                throw error("'\(walked.joined(separator: "."))' must be an object, not \(current.typeName)")
            }
            guard let next = object[String(fragment)] else { return nil }
            walked.append(fragment)
            current = next
        }
        return current
    }

    private func wrongType(_ path: String, _ value: OptionValue, expected: String) -> CommandLineError {
        error("'\(path)' must be \(expected), not \(value.typeName)")
    }

    // MARK: Strings

    func string(_ path: String) throws(CommandLineError) -> String? {
        guard let value = try value(at: path) else { return nil }
        guard case .string(let text) = value else { throw wrongType(path, value, expected: "a string") }
        guard !text.contains("\0") else { throw error("'\(path)' must not contain a NUL character") }
        return text
    }

    func requiredString(_ path: String, hint: String = "") throws(CommandLineError) -> String {
        guard let text = try string(path) else { throw missing(path, hint: hint) }
        return text
    }

    func nonEmptyString(_ path: String) throws(CommandLineError) -> String? {
        guard let text = try string(path) else { return nil }
        guard !text.isEmpty else { throw error("'\(path)' must not be empty") }
        return text
    }

    func missing(_ path: String, hint: String = "") -> CommandLineError {
        error("missing required key '\(path)'" + (hint.isEmpty ? "" : " (\(hint))"))
    }

    /// A string that must be one of `choices`.
    func choice(_ path: String, _ choices: [String]) throws(CommandLineError) -> String? {
        guard let text = try string(path) else { return nil }
        guard choices.contains(text) else {
            throw error("invalid value '\(text)' for '\(path)' (use \(Self.orList(choices)))")
        }
        return text
    }

    static func orList(_ words: [String]) -> String {
        words.count <= 1 ? words.joined() : words.dropLast().joined(separator: ", ") + " or " + words.last!
    }

    // MARK: Booleans

    func bool(_ path: String) throws(CommandLineError) -> Bool? {
        guard let value = try value(at: path) else { return nil }
        switch value {
        case .bool(let flag) where !isFromKeyval:
            return flag
        case .string(let text) where isFromKeyval:
            switch text {
            case "on", "yes", "true", "y": return true
            case "off", "no", "false", "n": return false
            default: throw error("invalid boolean '\(text)' for '\(path)' (use on or off)")
            }
        default:
            throw wrongType(path, value, expected: "a boolean (true or false)")
        }
    }

    // MARK: Numbers

    /// A non-negative integer: decimal or 0x-hex in keyval, an integer in JSON.
    func unsigned(_ path: String, in range: ClosedRange<UInt64> = 0...UInt64.max) throws(CommandLineError) -> UInt64? {
        guard let value = try value(at: path) else { return nil }
        let number: UInt64
        switch value {
        case .string(let text) where isFromKeyval:
            guard let parsed = Self.parseUnsigned(text) else {
                throw error("invalid number '\(text)' for '\(path)' (use a whole number from \(range.lowerBound) to \(range.upperBound))")
            }
            number = parsed
        case .number(let text) where !isFromKeyval:
            guard let parsed = UInt64(text) else {
                throw error("'\(path)' must be a whole number from \(range.lowerBound) to \(range.upperBound), not \(text)")
            }
            number = parsed
        default:
            throw wrongType(path, value, expected: "a number")
        }
        guard range.contains(number) else {
            throw error("'\(path)' must be from \(range.lowerBound) to \(range.upperBound), not \(number)")
        }
        return number
    }

    /// A byte count: a number with an optional k/M/G/T/P/E suffix in keyval, an integer in JSON.
    func size(_ path: String) throws(CommandLineError) -> UInt64? {
        guard let value = try value(at: path) else { return nil }
        switch value {
        case .string(let text) where isFromKeyval:
            guard let bytes = parseByteSize(text) ?? Self.parseHex(text) else {
                throw error("invalid size '\(text)' for '\(path)' (use a number with an optional k/M/G/T suffix)")
            }
            return bytes
        case .number(let text) where !isFromKeyval:
            guard let bytes = UInt64(text) else {
                throw error("invalid size \(text) for '\(path)' (use a whole number of bytes)")
            }
            return bytes
        default:
            throw wrongType(path, value, expected: "a size in bytes")
        }
    }

    static func parseUnsigned(_ text: String) -> UInt64? {
        if let hex = parseHex(text) { return hex }
        guard !text.isEmpty, text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        return UInt64(text)
    }

    static func parseHex(_ text: String) -> UInt64? {
        guard text.hasPrefix("0x") || text.hasPrefix("0X") else { return nil }
        let digits = text.dropFirst(2)
        guard !digits.isEmpty, digits.allSatisfy(\.isHexDigit) else { return nil }
        return UInt64(digits, radix: 16)
    }
}
