/// One command request: `{"execute": NAME, "arguments": {...}, "id": ANY}`.
struct QMPRequest {
    var command: String
    var arguments: JSONObject
    /// Echoed in the reply when present (any JSON value).
    var id: JSONValue?

    /// A request that cannot be run, and the id to echo with its error (when one was given).
    struct Rejection: Error {
        var error: QMPError
        var id: JSONValue?
    }

    /// Checks the envelope as QEMU does: members in the order written, then `execute`.
    init(_ message: JSONValue) throws(Rejection) {
        guard case .object(let object) = message else {
            throw Rejection(error: QMPError("QMP input must be a JSON object"), id: nil)
        }
        let id = object["id"]
        func reject(_ desc: String) -> Rejection { Rejection(error: QMPError(desc), id: id) }
        var command: String? = nil
        var arguments = JSONObject()
        for entry in object.entries {
            switch entry.key {
            case "execute":
                guard case .string(let name) = entry.value else { throw reject("QMP input member 'execute' must be a string") }
                command = name
            case "arguments":
                guard case .object(let given) = entry.value else { throw reject("QMP input member 'arguments' must be an object") }
                arguments = given
            case "id":
                break
            default:
                // Includes "exec-oob": Spindle does not offer the oob capability.
                throw reject("QMP input member '\(entry.key)' is unexpected")
            }
        }
        guard let command else { throw reject("QMP input lacks member 'execute'") }
        self.command = command
        self.arguments = arguments
        self.id = id
    }
}
