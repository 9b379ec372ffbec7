/// Parses QEMU's keyval syntax: `key=value` pairs separated by commas.
///
/// - A comma inside a value is written `,,`.
/// - Dotted keys (`cache.direct=on`) build nested objects.
/// - If the first pair has no `=`, it is the value of `impliedKey` (`--object iothread,id=x`);
///   that value ends at the first comma.
/// - A key given twice keeps its last value, as in QEMU.
/// - With `shortBooleans` (QemuOpts style, used by `--chardev`), a bare `flag` means `flag=on`
///   and `noflag` means `flag=off`; those keys are returned in `shortBooleansUsed`.
struct KeyValueParser {
    var option: String
    var impliedKey: String?
    var shortBooleans = false

    struct Result {
        var object: OptionObject
        var shortBooleansUsed: [String] = []
    }

    func parse(_ text: String) throws(CommandLineError) -> Result {
        let bytes = Array(text.utf8)
        var result = Result(object: OptionObject())
        var position = 0
        var isFirst = true
        while position < bytes.count {
            // The key runs up to '=' or ','.
            var keyEnd = position
            while keyEnd < bytes.count, bytes[keyEnd] != UInt8(ascii: "="), bytes[keyEnd] != UInt8(ascii: ",") {
                keyEnd += 1
            }
            let word = String(decoding: bytes[position..<keyEnd], as: UTF8.self)
            let hasEquals = keyEnd < bytes.count && bytes[keyEnd] == UInt8(ascii: "=")
            if !hasEquals {
                position = keyEnd + 1  // skip the ',' (or run past the end)
                if isFirst, let impliedKey, !word.isEmpty {
                    try insert(path: impliedKey, value: word, into: &result.object)
                } else if shortBooleans, !word.isEmpty {
                    let isNegated = word.hasPrefix("no") && word.count > 2
                    let key = isNegated ? String(word.dropFirst(2)) : word
                    try insert(path: key, value: isNegated ? "off" : "on", into: &result.object)
                    result.shortBooleansUsed.append(key)
                } else if word.isEmpty {
                    throw CommandLineError(option: option, "empty key (remove the extra ',' or write key=value)")
                } else {
                    throw CommandLineError(option: option, "expected '=' after '\(word)' (write \(word)=VALUE)")
                }
                isFirst = false
                continue
            }
            // The value runs up to a single ','; ",," stands for a literal comma.
            var value: [UInt8] = []
            var cursor = keyEnd + 1
            while cursor < bytes.count {
                if bytes[cursor] == UInt8(ascii: ",") {
                    if cursor + 1 < bytes.count, bytes[cursor + 1] == UInt8(ascii: ",") {
                        value.append(UInt8(ascii: ","))
                        cursor += 2
                        continue
                    }
                    break
                }
                value.append(bytes[cursor])
                cursor += 1
            }
            try insert(path: word, value: String(decoding: value, as: UTF8.self), into: &result.object)
            position = cursor + 1
            isFirst = false
        }
        return result
    }

    /// Stores `value` at a dotted `path`, creating objects on the way.
    private func insert(path: String, value: String, into object: inout OptionObject) throws(CommandLineError) {
        let fragments = path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard fragments.allSatisfy(Self.isValidFragment) else {
            throw CommandLineError(option: option, "invalid key '\(path)' (keys are letters, digits, '-' and '_', joined by '.' for nesting)")
        }
        try insert(fragments: fragments[...], parentPath: nil, value: value, into: &object)
    }

    private func insert(fragments: ArraySlice<String>, parentPath: String?, value: String,
                        into object: inout OptionObject) throws(CommandLineError) {
        guard let head = fragments.first else { return }
        let path = parentPath.map { $0 + "." + head } ?? head
        let rest = fragments.dropFirst()
        if rest.isEmpty {
            if case .object = object[head] { throw inconsistent(path) }
            object[head] = .string(value)
            return
        }
        var child: OptionObject
        switch object[head] {
        case nil: child = OptionObject()
        case .object(let existing): child = existing
        default: throw inconsistent(path)
        }
        try insert(fragments: rest, parentPath: path, value: value, into: &child)
        object[head] = .object(child)
    }

    private func inconsistent(_ key: String) -> CommandLineError {
        CommandLineError(option: option, "'\(key)' is given both as a value and with sub-keys like '\(key).…' (use only one form)")
    }

    static func isValidFragment(_ fragment: String) -> Bool {
        !fragment.isEmpty && fragment.unicodeScalars.allSatisfy {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_")
        }
    }
}
