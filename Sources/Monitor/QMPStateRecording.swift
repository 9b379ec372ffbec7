import ControlThread

/// The one place a succeeded QMP command is handed to the daemon to be recorded (the state
/// file), after it took effect and before its reply is sent.
extension MonitorCommandTarget {
    /// Default: nothing is recorded (targets without a state file, tests).
    public func recordSucceeded(command: String, arguments: JSONObject, result: JSONValue) throws(QMPError) {}
}

extension QMPCommandDispatcher {
    /// Runs the command, then lets the target record it; a recording failure becomes the
    /// command's error reply (the change took effect; the target's text says so).
    func runAndRecord(_ request: QMPRequest) async throws(QMPError) -> JSONValue {
        let result = try await run(request)
        try target?.recordSucceeded(command: request.command, arguments: request.arguments, result: result)
        return result
    }
}

/// Replays one recorded command at start-up through the same argument checks and target
/// functions a QMP client's command goes through (it is not recorded again).
@ControlActor
public func replayQMPCommand(_ command: String, arguments: JSONObject,
                             on target: any MonitorCommandTarget) async throws(QMPError) -> JSONValue {
    let dispatcher = QMPCommandDispatcher(target: target, identity: .spindle)
    let request: QMPRequest
    do {
        request = try QMPRequest(.object(["execute": .string(command), "arguments": .object(arguments)]))
    } catch {
        throw error.error
    }
    return try await dispatcher.run(request)
}
