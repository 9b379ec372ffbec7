/// Reads a command's `arguments` with QEMU's checks and error texts: each parameter read in
/// the schema's order gets its type checked ("Invalid parameter type for 'size', expected:
/// integer"), required ones must be there ("Parameter 'size' is missing"), and `finish()`
/// rejects whatever was not read ("Parameter 'x' is unexpected").
struct CommandArguments {
    let object: JSONObject
    private var read: Set<String> = []

    init(_ object: JSONObject) { self.object = object }

    private static func wrongType(_ key: String, _ expected: String) -> QMPError {
        QMPError("Invalid parameter type for '\(key)', expected: \(expected)")
    }

    static func missing(_ key: String) -> QMPError { QMPError("Parameter '\(key)' is missing") }

    private mutating func take(_ key: String) -> JSONValue? {
        read.insert(key)
        return object[key]
    }

    mutating func optionalString(_ key: String) throws(QMPError) -> String? {
        guard let value = take(key) else { return nil }
        guard case .string(let text) = value else { throw Self.wrongType(key, "string") }
        return text
    }

    mutating func requiredString(_ key: String) throws(QMPError) -> String {
        guard let text = try optionalString(key) else { throw Self.missing(key) }
        return text
    }

    mutating func optionalBool(_ key: String) throws(QMPError) -> Bool? {
        guard let value = take(key) else { return nil }
        guard case .bool(let flag) = value else { throw Self.wrongType(key, "boolean") }
        return flag
    }

    /// A QAPI `int`: any JSON integer that fits in 64 signed bits.
    mutating func optionalInt64(_ key: String) throws(QMPError) -> Int64? {
        guard let value = take(key) else { return nil }
        guard case .number(let text) = value, let number = Int64(text) else { throw Self.wrongType(key, "integer") }
        return number
    }

    mutating func requiredInt64(_ key: String) throws(QMPError) -> Int64 {
        guard let number = try optionalInt64(key) else { throw Self.missing(key) }
        return number
    }

    /// A QAPI enum: a string that must be one of the type's raw values.
    mutating func optionalEnum<Choice: RawRepresentable<String>>(_ key: String, _ type: Choice.Type) throws(QMPError) -> Choice? {
        guard let text = try optionalString(key) else { return nil }
        guard let choice = Choice(rawValue: text) else { throw QMPError("Parameter '\(key)' does not accept value '\(text)'") }
        return choice
    }

    /// A QAPI list of enum values (e.g. qmp_capabilities' `enable`). QEMU names a bad element
    /// 'null' (its list elements have no name), so Spindle does too.
    mutating func optionalEnumList<Choice: RawRepresentable<String>>(_ key: String, _ type: Choice.Type) throws(QMPError) -> [Choice]? {
        guard let value = take(key) else { return nil }
        guard case .array(let elements) = value else { throw Self.wrongType(key, "array") }
        var choices: [Choice] = []
        for element in elements {
            guard case .string(let text) = element else { throw Self.wrongType("\(key)[\(choices.count)]", "string") }
            guard let choice = Choice(rawValue: text) else { throw QMPError("Parameter 'null' does not accept value '\(text)'") }
            choices.append(choice)
        }
        return choices
    }

    /// Fails on the first parameter not read, in the order written.
    func finish() throws(QMPError) {
        for entry in object.entries where !read.contains(entry.key) {
            throw QMPError("Parameter '\(entry.key)' is unexpected")
        }
    }
}
