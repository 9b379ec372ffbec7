import BlockCommon

/// The JSON forms of `--blockdev`, `--export` and `--object iothread`, for QMP
/// `blockdev-add`, `block-export-add` and `object-add`, which take exactly the same shapes.
/// Errors carry only the message (no option prefix), and command-line-only notes (such as
/// `aio=threads` being ignored) are dropped.
public func blockdevOptions(fromJSONObject object: OptionObject) throws(CommandLineError) -> BlockdevOptions {
    try parseJSONObject(object) { reader throws(CommandLineError) in try BlockdevParser.parse(reader).blockdev }
}

public func exportOptions(fromJSONObject object: OptionObject) throws(CommandLineError) -> VhostUserBlkExportOptions {
    try parseJSONObject(object, with: ExportParser.parse)
}

public func iothreadObjectOptions(fromJSONObject object: OptionObject) throws(CommandLineError) -> IOThreadObjectOptions {
    try parseJSONObject(object, with: ObjectParser.parse)
}

/// object-add with qom-type secret.
public func secretObjectOptions(fromJSONObject object: OptionObject) throws(CommandLineError) -> SecretObjectOptions {
    try parseJSONObject(object, with: SecretParser.parse)
}

/// Runs an option parser on a JSON object, dropping the option prefix from its errors.
private func parseJSONObject<T>(_ object: OptionObject,
                                with parse: (OptionReader) throws(CommandLineError) -> T) throws(CommandLineError) -> T {
    do {
        return try parse(OptionReader(option: "", root: object, isFromKeyval: false))
    } catch {
        throw CommandLineError(option: "", error.message)
    }
}
