import BlockCommon

/// Turns one `--object` value into `IOThreadObjectOptions` (or, with `parseAny`, a
/// throttle group too: ThrottleGroupParser).
struct ObjectParser {
    static let option = "--object"
    static let iothreadKeys = ["qom-type", "id", "cpu", "poll-max-ns", "poll-grow", "poll-shrink", "x-sleep"]
    /// QEMU stores the polling parameters as int64.
    static let pollRange: ClosedRange<UInt64> = 0...UInt64(Int64.max)
    static let cpuRange: ClosedRange<UInt64> = 0...UInt64(Int32.max)

    static func parse(_ text: String) throws(CommandLineError) -> IOThreadObjectOptions {
        try parse(try OptionReader(option: option, text: text, impliedKey: "qom-type"))
    }

    static func parse(_ reader: OptionReader) throws(CommandLineError) -> IOThreadObjectOptions {
        var reader = reader
        if let id = try? reader.string("id"), NodeName.isValid(id) { reader.subject = "id=\(id)" }
        guard let type = try reader.string("qom-type") else {
            throw reader.missing("qom-type", hint: "write --object iothread,id=ID")
        }
        guard type == "iothread" else {
            throw reader.error("unsupported object type '\(type)' (Spindle supports iothread, throttle-group and secret, e.g. --object iothread,id=iot0)")
        }
        try reader.rejectUnknownKeys(allowed: iothreadKeys, context: "iothread")
        var iothread = IOThreadObjectOptions(id: try reader.identifier("id", hint: "name the thread, e.g. id=iot0"))
        iothread.cpu = try reader.unsigned("cpu", in: cpuRange).map { Int($0) }
        iothread.pollMaxNs = try reader.unsigned("poll-max-ns", in: pollRange)
        iothread.pollGrow = try reader.unsigned("poll-grow", in: pollRange)
        iothread.pollShrink = try reader.unsigned("poll-shrink", in: pollRange)
        iothread.sleepsInPoll = try reader.choice("x-sleep", ["io_uring", "poll"]) == "poll"
        return iothread
    }

    /// Either object type Spindle has.
    static func parseAny(_ reader: OptionReader) throws(CommandLineError) -> ObjectOptions {
        var reader = reader
        if let id = try? reader.string("id"), NodeName.isValid(id) { reader.subject = "id=\(id)" }
        if try reader.string("qom-type") == "throttle-group" { return .throttleGroup(try ThrottleGroupParser.parse(reader)) }
        return .iothread(try parse(reader))
    }
}

/// What one `--object` (or object-add) describes.
public enum ObjectOptions: Sendable, Equatable {
    case iothread(IOThreadObjectOptions)
    case throttleGroup(ThrottleGroupOptions)

    public var id: String {
        switch self {
        case .iothread(let iothread): return iothread.id
        case .throttleGroup(let group): return group.id
        }
    }
}
