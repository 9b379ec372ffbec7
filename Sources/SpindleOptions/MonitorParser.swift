import BlockCommon

/// Parses `--chardev` (QemuOpts syntax, like QEMU) and `--monitor` (keyval or JSON).
struct ChardevParser {
    static let option = "--chardev"
    static let keys = ["backend", "id", "path", "server", "wait"]

    struct Result {
        var chardev: SocketChardevOptions
        var notes: [String] = []
    }

    static func parse(_ text: String) throws(CommandLineError) -> Result {
        guard !text.hasPrefix("{") else {
            throw CommandLineError(option: option, "JSON is not accepted here (write socket,id=ID,path=PATH,server=on,wait=off)")
        }
        let parsed = try KeyValueParser(option: option, impliedKey: "backend", shortBooleans: true).parse(text)
        var reader = OptionReader(option: option, root: parsed.object, isFromKeyval: true)
        if let id = try? reader.string("id"), NodeName.isValid(id) { reader.subject = "id=\(id)" }
        guard let backend = try reader.string("backend") else {
            throw reader.missing("backend", hint: "write --chardev socket,id=ID,path=PATH,server=on,wait=off")
        }
        guard backend == "socket" else {
            throw reader.error("unsupported chardev backend '\(backend)' (Spindle supports only socket, for QMP monitors)")
        }
        try reader.rejectUnknownKeys(allowed: keys, context: "a socket chardev")
        let id = try reader.identifier("id", hint: "name it so --monitor chardev=ID can refer to it")
        let path = try reader.socketPath("path", hint: "Spindle monitors listen on UNIX sockets")
        guard try reader.bool("server") == true else {
            throw reader.error("Spindle only listens for monitor clients (add server=on)")
        }
        var chardev = SocketChardevOptions(id: id, path: path)
        chardev.wait = try reader.bool("wait") ?? true
        let notes = parsed.shortBooleansUsed.map { key in
            "--chardev id=\(id): short-form boolean '\(key)' is deprecated (write \(key)=on or \(key)=off)"
        }
        return Result(chardev: chardev, notes: notes)
    }
}

/// `--monitor`: a QMP monitor on an earlier `--chardev`. Returns the chardev id to look up.
struct MonitorParser {
    static let option = "--monitor"
    static let keys = ["chardev", "id", "mode", "pretty"]

    struct Result {
        var chardevID: String
        var id: String?
        var pretty: Bool
    }

    static func parse(_ text: String) throws(CommandLineError) -> Result {
        let reader = try OptionReader(option: option, text: text, impliedKey: "chardev")
        try reader.rejectUnknownKeys(allowed: keys, context: "--monitor")
        guard let chardev = try reader.string("chardev") else {
            throw reader.missing("chardev", hint: "the id of a --chardev socket, e.g. --monitor chardev=qmp0")
        }
        if let mode = try reader.string("mode"), mode != "control" {
            throw reader.error("invalid value '\(mode)' for 'mode' (Spindle monitors speak QMP only: use mode=control)")
        }
        let id = try reader.value(at: "id") == nil ? nil : try reader.identifier("id")
        return Result(chardevID: chardev, id: id, pretty: try reader.bool("pretty") ?? false)
    }
}
