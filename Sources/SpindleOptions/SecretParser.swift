import BlockCommon

/// `--object secret,id=ID,data=TEXT|file=PATH[,format=raw|base64]` (QEMU's secret object;
/// keyid/iv, encrypted secrets, are not supported). Over QMP: object-add qom-type secret.
struct SecretParser {
    static let keys = ["qom-type", "id", "data", "file", "format"]

    /// Whether an --object value is a secret (so the iothread parser need not see it).
    static func isSecret(_ text: String) -> Bool {
        guard let reader = try? OptionReader(option: ObjectParser.option, text: text, impliedKey: "qom-type") else { return false }
        return (try? reader.string("qom-type")) == "secret"
    }

    static func parse(_ text: String) throws(CommandLineError) -> SecretObjectOptions {
        try parse(try OptionReader(option: ObjectParser.option, text: text, impliedKey: "qom-type"))
    }

    static func parse(_ reader: OptionReader) throws(CommandLineError) -> SecretObjectOptions {
        var reader = reader
        if let id = try? reader.string("id"), NodeName.isValid(id) { reader.subject = "id=\(id)" }
        let keyID = try reader.value(at: "keyid"), iv = try reader.value(at: "iv")
        if keyID != nil || iv != nil {
            throw reader.error("encrypted secrets (keyid, iv) are not supported; give the key itself with data= or file=")
        }
        try reader.rejectUnknownKeys(allowed: keys, context: "secret")
        let id = try reader.identifier("id", hint: "name the secret, e.g. id=sec0")
        let data = try reader.string("data")
        let file = try reader.nonEmptyString("file")
        let source: SecretObjectOptions.Source
        switch (data, file) {
        case (let data?, nil): source = .data(data)
        case (nil, let file?): source = .file(file)
        case (nil, nil): throw reader.error("give the secret with data=... or file=PATH")
        case (.some, .some): throw reader.error("give data= or file=, not both")
        }
        var secret = SecretObjectOptions(id: id, source: source)
        if let format = try reader.choice("format", ["raw", "base64"]) {
            secret.format = SecretObjectOptions.Format(rawValue: format) ?? .raw
        }
        return secret
    }
}
