import BlockCommon

/// Collects options in command-line order and checks how they refer to each other:
/// unique names, exports of existing nodes, monitors on existing chardevs.
struct ConfigurationBuilder {
    var configuration = DaemonConfiguration()
    /// Chardevs already claimed by a monitor.
    private var monitoredChardevs: Set<String> = []

    mutating func apply(_ option: CommandLineOption.ValueOption, _ value: String) throws(CommandLineError) {
        switch option {
        case .blockdev: try addBlockdev(value)
        case .chardev: try addChardev(value)
        case .export: try addExport(value)
        case .monitor: try addMonitor(value)
        case .object: try addObject(value)
        case .pidfile: try setPidfile(value)
        case .qmp: try addQMPSocket(value)
        case .metrics: try setMetrics(value)
        case .stateFile: try setStateFile(value)
        }
    }

    mutating func addBlockdev(_ text: String) throws(CommandLineError) {
        let result = try BlockdevParser.parse(text)
        let name = result.blockdev.nodeName
        guard !configuration.blockdevs.contains(where: { $0.nodeName == name }) else {
            throw CommandLineError(option: BlockdevParser.option, "node-name '\(name)' is already used by an earlier --blockdev (pick another name)")
        }
        for child in result.blockdev.driver.childNodeNames where !configuration.blockdevs.contains(where: { $0.nodeName == child }) {
            throw CommandLineError(option: BlockdevParser.option, subject: "node-name=\(name)",
                                   "node '\(child)' does not exist (define it with an earlier --blockdev)")
        }
        if case .throttle(let throttle) = result.blockdev.driver, !configuration.throttleGroups.contains(where: { $0.id == throttle.group }) {
            throw CommandLineError(option: BlockdevParser.option, subject: "node-name=\(name)",
                                   "throttle group '\(throttle.group)' does not exist (define it with an earlier --object throttle-group,id=\(throttle.group))")
        }
        configuration.blockdevs.append(result.blockdev)
        configuration.notes += result.notes
    }

    mutating func addExport(_ text: String) throws(CommandLineError) {
        let export = try ExportParser.parse(text)
        func failure(_ message: String) -> CommandLineError {
            CommandLineError(option: ExportParser.option, subject: "id=\(export.id)", message)
        }
        guard !configuration.exports.contains(where: { $0.id == export.id }) else {
            throw failure("export id '\(export.id)' is already used by an earlier --export (pick another id)")
        }
        guard let node = configuration.blockdevs.first(where: { $0.nodeName == export.nodeName }) else {
            throw failure("node '\(export.nodeName)' does not exist (define it with --blockdev first)")
        }
        if export.writable && isReadOnly(node) {
            throw failure("node '\(export.nodeName)' is read-only, so it cannot be exported with writable=on (drop one of them)")
        }
        for iothread in export.namedIOThreads where !configuration.iothreads.contains(where: { $0.id == iothread }) {
            throw failure("iothread '\(iothread)' does not exist (define it with --object iothread,id=\(iothread) first)")
        }
        try checkSocketPathIsFree(export.socketPath, failure: failure)
        configuration.exports.append(export)
    }

    /// Whether a node is read-only; a filter is as read-only as the node below it.
    private func isReadOnly(_ node: BlockdevOptions) -> Bool {
        node.readOnly || node.driver.childNodeNames.contains { child in
            configuration.blockdevs.first { $0.nodeName == child }.map(isReadOnly) ?? false
        }
    }

    mutating func addObject(_ text: String) throws(CommandLineError) {
        if SecretParser.isSecret(text) { return try addSecret(text) }
        let object = try ObjectParser.parseAny(OptionReader(option: ObjectParser.option, text: text, impliedKey: "qom-type"))
        guard !configuration.iothreads.contains(where: { $0.id == object.id }),
              !configuration.throttleGroups.contains(where: { $0.id == object.id }),
              !configuration.secrets.contains(where: { $0.id == object.id }) else {
            throw CommandLineError(option: ObjectParser.option, "object id '\(object.id)' is already used by an earlier --object (pick another id)")
        }
        switch object {
        case .iothread(let iothread): configuration.iothreads.append(iothread)
        case .throttleGroup(let group): configuration.throttleGroups.append(group)
        }
    }

    mutating func addSecret(_ text: String) throws(CommandLineError) {
        let secret = try SecretParser.parse(text)
        guard !configuration.secrets.contains(where: { $0.id == secret.id }),
              !configuration.iothreads.contains(where: { $0.id == secret.id }),
              !configuration.throttleGroups.contains(where: { $0.id == secret.id }) else {
            throw CommandLineError(option: ObjectParser.option, "object id '\(secret.id)' is already used by an earlier --object (pick another id)")
        }
        configuration.secrets.append(secret)
    }

    mutating func addChardev(_ text: String) throws(CommandLineError) {
        let result = try ChardevParser.parse(text)
        try addChardev(result.chardev, option: ChardevParser.option)
        configuration.notes += result.notes
    }

    private mutating func addChardev(_ chardev: SocketChardevOptions, option: String) throws(CommandLineError) {
        func failure(_ message: String) -> CommandLineError {
            CommandLineError(option: option, subject: chardev.id.hasPrefix("#") ? nil : "id=\(chardev.id)", message)
        }
        guard !configuration.chardevs.contains(where: { $0.id == chardev.id }) else {
            throw failure("chardev id '\(chardev.id)' is already used by an earlier --chardev (pick another id)")
        }
        try checkSocketPathIsFree(chardev.path, failure: failure)
        configuration.chardevs.append(chardev)
    }

    mutating func addMonitor(_ text: String) throws(CommandLineError) {
        let result = try MonitorParser.parse(text)
        guard let chardev = configuration.chardevs.first(where: { $0.id == result.chardevID }) else {
            throw CommandLineError(option: MonitorParser.option, "chardev '\(result.chardevID)' does not exist (define it with --chardev socket,id=\(result.chardevID),... first)")
        }
        if let id = result.id, configuration.monitors.contains(where: { $0.id == id }) {
            throw CommandLineError(option: MonitorParser.option, "monitor id '\(id)' is already used by an earlier --monitor (pick another id)")
        }
        var monitor = MonitorOptions(chardev: chardev)
        monitor.id = result.id
        monitor.pretty = result.pretty
        try addMonitor(monitor, option: MonitorParser.option)
    }

    /// `--qmp PATH`: shorthand for a listening, non-waiting chardev plus a QMP monitor on it.
    mutating func addQMPSocket(_ path: String) throws(CommandLineError) {
        let option = "--qmp"
        guard !path.isEmpty else { throw CommandLineError(option: option, "socket path must not be empty") }
        guard path.utf8.count <= OptionReader.maximumSocketPathLength, !path.contains("\0") else {
            throw CommandLineError(option: option, "socket path is too long (UNIX sockets allow at most \(OptionReader.maximumSocketPathLength) bytes)")
        }
        // '#' cannot start a user-chosen id, so generated ids never collide with --chardev ones.
        var chardev = SocketChardevOptions(id: "#qmp\(configuration.chardevs.count)", path: path)
        chardev.wait = false
        try addChardev(chardev, option: option)
        try addMonitor(MonitorOptions(chardev: chardev), option: option)
    }

    private mutating func addMonitor(_ monitor: MonitorOptions, option: String) throws(CommandLineError) {
        guard !monitoredChardevs.contains(monitor.chardev.id) else {
            throw CommandLineError(option: option, "chardev '\(monitor.chardev.id)' already has a monitor (give each --monitor its own --chardev)")
        }
        monitoredChardevs.insert(monitor.chardev.id)
        configuration.monitors.append(monitor)
    }

    mutating func setPidfile(_ path: String) throws(CommandLineError) {
        guard !path.isEmpty else { throw CommandLineError(option: "--pidfile", "path must not be empty") }
        configuration.pidfile = path  // the last --pidfile wins, as in qemu-storage-daemon
    }

    mutating func setStateFile(_ path: String) throws(CommandLineError) {
        guard !path.isEmpty, !path.hasSuffix("/") else {
            throw CommandLineError(option: "--state-file", "give a file path, e.g. /var/lib/spindle/state.json")
        }
        configuration.stateFile = path  // the last one wins, like --pidfile
    }

    /// Two listeners on one socket path would unlink each other's socket.
    private func checkSocketPathIsFree(_ path: String, failure: (String) -> CommandLineError) throws(CommandLineError) {
        if let export = configuration.exports.first(where: { $0.socketPath == path }) {
            throw failure("socket path '\(path)' is already used by export '\(export.id)' (give each socket its own path)")
        }
        if let chardev = configuration.chardevs.first(where: { $0.path == path }) {
            let owner = chardev.id.hasPrefix("#") ? "--qmp" : "chardev '\(chardev.id)'"
            throw failure("socket path '\(path)' is already used by \(owner) (give each socket its own path)")
        }
        if case .unix(path)? = configuration.metrics?.address {
            throw failure("socket path '\(path)' is already used by --metrics (give each socket its own path)")
        }
    }

    /// `--metrics`: one Prometheus endpoint per daemon.
    mutating func setMetrics(_ text: String) throws(CommandLineError) {
        guard configuration.metrics == nil else {
            throw CommandLineError(option: MetricsParser.option, "given twice (Spindle serves one metrics endpoint: keep one --metrics)")
        }
        let metrics = try MetricsParser.parse(text)
        if case .unix(let path) = metrics.address {
            try checkSocketPathIsFree(path) { CommandLineError(option: MetricsParser.option, $0) }
        }
        configuration.metrics = metrics
    }
}
