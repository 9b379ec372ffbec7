import BlockCommon

/// The JSON forms of `--blockdev` and `--export`, for QMP `blockdev-add` and `block-export-add`,
/// which take exactly the same shapes. Errors carry only the message (no option prefix), and
/// command-line-only notes (such as `aio=threads` being ignored) are dropped.
public func blockdevOptions(fromJSONObject object: OptionObject) throws(CommandLineError) -> BlockdevOptions {
    let reader = OptionReader(option: "", root: object, isFromKeyval: false)
    do {
        return try BlockdevParser.parse(reader).blockdev
    } catch {
        throw CommandLineError(option: "", error.message)
    }
}

/// See `blockdevOptions(fromJSONObject:)`.
public func exportOptions(fromJSONObject object: OptionObject) throws(CommandLineError) -> VhostUserBlkExportOptions {
    let reader = OptionReader(option: "", root: object, isFromKeyval: false)
    do {
        return try ExportParser.parse(reader)
    } catch {
        throw CommandLineError(option: "", error.message)
    }
}

/// The JSON form of `--object iothread`, for QMP `object-add`.
public func iothreadObjectOptions(fromJSONObject object: OptionObject) throws(CommandLineError) -> IOThreadObjectOptions {
    let reader = OptionReader(option: "", root: object, isFromKeyval: false)
    do {
        return try ObjectParser.parse(reader)
    } catch {
        throw CommandLineError(option: "", error.message)
    }
}
