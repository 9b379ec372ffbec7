import ControlThread

/// `human-monitor-command`: the one HMP command management tools still send to a storage
/// daemon, `drive_del ID`, which revokes the export's access to its image. Like HMP, failures
/// are not QMP errors: the returned string holds the message ("" means success).
@ControlActor
enum HumanMonitorCommand {
    static func run(_ arguments: inout CommandArguments, target: any MonitorCommandTarget) async throws(QMPError) -> JSONValue {
        let commandLine = try arguments.requiredString("command-line")
        _ = try arguments.optionalInt64("cpu-index")  // no CPUs here; accepted and ignored
        try arguments.finish()
        return .string(await output(of: commandLine, target: target))
    }

    private static func output(of commandLine: String, target: any MonitorCommandTarget) async -> String {
        let words = commandLine.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" })
        guard let name = words.first else { return "" }
        guard name == "drive_del" else {
            return "unknown command: '\(name)' (Spindle's human monitor supports only drive_del)\r\n"
        }
        let usage = "Try \"help drive_del\" for more information\r\n"
        guard words.count >= 2 else { return "drive_del: block device name expected\r\n" + usage }
        guard words.count == 2 else { return "drive_del: extraneous characters at the end of line\r\n" + usage }
        do {
            try await target.revokeExport(id: String(words[1]))
            return ""
        } catch {
            return error.desc + "\r\n"
        }
    }
}
