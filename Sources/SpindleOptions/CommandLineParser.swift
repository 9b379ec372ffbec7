/// Parses Spindle's command line (without argv[0]) the way qemu-storage-daemon does:
/// options are processed in order, so `--export` can only use nodes and iothreads defined
/// before it, and `--help`/`--version` act as soon as they are reached.
public func parseCommandLine(_ args: [String]) throws(CommandLineError) -> CommandLineAction {
    var builder = ConfigurationBuilder()
    var index = 0
    while index < args.count {
        let argument = args[index]
        index += 1
        if argument == "--" {
            // Like getopt: "--" ends the options; qsd takes no other arguments.
            if index < args.count { throw unexpectedArgument(args[index]) }
            break
        }
        let (option, inlineValue) = try recognize(argument)
        switch option.kind {
        case .flag(let action):
            if inlineValue != nil {
                throw CommandLineError(option: option.longName, "takes no value (remove '=…')")
            }
            switch action {
            case .help: return .help
            case .version: return .version
            case .daemonize: builder.configuration.daemonize = true
            }
        case .value(let valueOption):
            let value: String
            if let inlineValue {
                value = inlineValue
            } else if index < args.count, !args[index].hasPrefix("--") {
                value = args[index]
                index += 1
            } else {
                throw CommandLineError(option: option.longName, "missing value (write \(option.longName) \(option.valueName))")
            }
            try builder.apply(valueOption, value)
        case .unsupported(let reason):
            throw CommandLineError(option: option.longName, "not supported by Spindle (\(reason))")
        }
    }
    return .run(builder.configuration)
}

/// One option Spindle knows about.
struct CommandLineOption: Sendable {
    enum FlagAction: Sendable { case help, version, daemonize }
    enum ValueOption: Sendable { case blockdev, chardev, export, monitor, object, pidfile, qmp, metrics, stateFile }
    enum Kind: Sendable {
        case flag(FlagAction)
        case value(ValueOption)
        /// A qemu-storage-daemon option Spindle rejects, and why.
        case unsupported(String)
    }
    var longName: String
    var shortName: Character?
    var valueName: String
    var kind: Kind

    static let all: [CommandLineOption] = [
        .init(longName: "--blockdev", valueName: "driver=file,node-name=NAME,filename=PATH",
              kind: .value(.blockdev)),
        .init(longName: "--chardev", valueName: "socket,id=ID,path=PATH,server=on,wait=off",
              kind: .value(.chardev)),
        .init(longName: "--daemonize", kind: .flag(.daemonize)),
        .init(longName: "--export", valueName: "type=vhost-user-blk,id=ID,node-name=NAME,addr.type=unix,addr.path=SOCKET",
              kind: .value(.export)),
        .init(longName: "--help", shortName: "h", kind: .flag(.help)),
        .init(longName: "--monitor", valueName: "chardev=ID", kind: .value(.monitor)),
        .init(longName: "--metrics", valueName: "addr.type=inet,addr.host=HOST,addr.port=PORT", kind: .value(.metrics)),
        .init(longName: "--nbd-server", kind: .unsupported("Spindle exports only vhost-user-blk")),
        .init(longName: "--object", valueName: "iothread,id=ID", kind: .value(.object)),
        .init(longName: "--pidfile", valueName: "PATH", kind: .value(.pidfile)),
        .init(longName: "--qmp", valueName: "SOCKET-PATH", kind: .value(.qmp)),
        .init(longName: "--state-file", valueName: "PATH", kind: .value(.stateFile)),
        .init(longName: "--trace", shortName: "T", kind: .unsupported("remove it; Spindle logs through its own logger")),
        .init(longName: "--version", shortName: "V", kind: .flag(.version)),
    ]

    init(longName: String, shortName: Character? = nil, valueName: String = "", kind: Kind) {
        self.longName = longName
        self.shortName = shortName
        self.valueName = valueName
        self.kind = kind
    }
}

/// Finds the option an argument names, splitting off an `=value`. Like getopt_long, a long
/// option may be shortened to any unambiguous prefix (`--pid` for `--pidfile`).
private func recognize(_ argument: String) throws(CommandLineError) -> (CommandLineOption, String?) {
    if argument.hasPrefix("--") {
        let name: String
        var value: String? = nil
        if let equals = argument.firstIndex(of: "=") {
            name = String(argument[..<equals])
            value = String(argument[argument.index(after: equals)...])
        } else {
            name = argument
        }
        if let exact = CommandLineOption.all.first(where: { $0.longName == name }) { return (exact, value) }
        let candidates = name.count > 2 ? CommandLineOption.all.filter { $0.longName.hasPrefix(name) } : []
        if candidates.count == 1 { return (candidates[0], value) }
        if candidates.count > 1 {
            throw CommandLineError(option: name, "ambiguous option (could be \(OptionReader.orList(candidates.map(\.longName))))")
        }
        throw CommandLineError(option: name, "unknown option (see spindle --help)")
    }
    if argument.hasPrefix("-"), argument.count > 1 {
        let body = argument.dropFirst()
        if body.count == 1, let option = CommandLineOption.all.first(where: { $0.shortName == body.first }) {
            return (option, nil)
        }
        let name = String(argument.prefix(while: { $0 != "=" }))
        if CommandLineOption.all.contains(where: { $0.longName == "-" + name }) {
            throw CommandLineError(option: name, "unknown option (long options start with two dashes: use -\(name))")
        }
        throw CommandLineError(option: argument, "unknown option (see spindle --help)")
    }
    throw unexpectedArgument(argument)
}

private func unexpectedArgument(_ argument: String) -> CommandLineError {
    CommandLineError(option: "", "unexpected argument '\(argument)' (every setting is given as --option VALUE; see spindle --help)")
}
