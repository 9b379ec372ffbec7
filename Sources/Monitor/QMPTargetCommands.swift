import BlockCommon
import ControlThread
import SpindleOptions

/// The commands that change the daemon's state: argument checks, then the target.
@ControlActor
struct QMPTargetCommands {
    let target: any MonitorCommandTarget

    /// Takes exactly the JSON form of `--blockdev`.
    func blockdevAdd(_ arguments: JSONObject) throws(QMPError) -> JSONValue {
        // QEMU's texts for the union's discriminator; the rest is the --blockdev reader's.
        try requireString("driver", in: arguments)
        let options = try optionsFromJSON(arguments, with: blockdevOptions)
        try target.blockdevAdd(options)
        return .emptyObject
    }

    func blockdevDel(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let nodeName = try arguments.requiredString("node-name")
        try arguments.finish()
        try target.blockdevDel(nodeName: nodeName)
        return .emptyObject
    }

    /// blockdev-set-active {"node-name": optional, "active": bool} (QEMU 10).
    func blockdevSetActive(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let nodeName = try arguments.optionalString("node-name")
        guard let active = try arguments.optionalBool("active") else { throw CommandArguments.missing("active") }
        try arguments.finish()
        try await target.blockdevSetActive(nodeName: nodeName, active: active)
        return .emptyObject
    }

    /// Takes exactly the JSON form of `--export`.
    func blockExportAdd(_ arguments: JSONObject) async throws(QMPError) -> JSONValue {
        // QEMU checks these in this order before the type-specific members.
        for key in ["type", "id", "node-name"] { try requireString(key, in: arguments) }
        guard arguments["addr"] != nil else { throw CommandArguments.missing("addr") }
        let options = try optionsFromJSON(arguments, with: exportOptions)
        try await target.blockExportAdd(options)
        return .emptyObject
    }

    func blockExportDel(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let id = try arguments.requiredString("id")
        let mode = try arguments.optionalEnum("mode", BlockExportDeleteMode.self) ?? .safe
        try arguments.finish()
        try await target.blockExportDel(id: id, mode: mode)
        return .emptyObject
    }

    /// Spindle's own command: what HMP `drive_del` does, for QMP-only clients.
    func blockExportRevoke(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let id = try arguments.requiredString("id")
        try arguments.finish()
        try await target.revokeExport(id: id)
        return .emptyObject
    }

    func blockResize(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let device = try arguments.optionalString("device")
        let nodeName = try arguments.optionalString("node-name")
        let size = try arguments.requiredInt64("size")
        try arguments.finish()
        guard size >= 0 else { throw QMPError("Parameter 'size' expects a >0 size") }
        let resizeTarget: ResizeTarget
        switch (device, nodeName) {
        case (let device?, nil): resizeTarget = .device(device)
        case (nil, let nodeName?): resizeTarget = .nodeName(nodeName)
        case (nil, nil): throw QMPError("Cannot find device='' nor node-name=''")
        case (_?, _?): throw QMPError("Parameters 'device' and 'node-name' are mutually exclusive (give one of them)")
        }
        let outcome = try await target.blockResize(resizeTarget, size: UInt64(size))
        // QEMU returns {}; Spindle adds whether the guest was told (no backend channel: not).
        return .object(["guest-notified": .bool(outcome.guestNotified)])
    }

    func queryBlockExports(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        try arguments.finish()
        return .array(target.queryBlockExports().map(QMPQueryShapes.export))
    }

    func queryNamedBlockNodes(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        _ = try arguments.optionalBool("flat")  // Spindle's nodes have no children to flatten
        try arguments.finish()
        return .array(target.queryNamedBlockNodes().map(QMPQueryShapes.node))
    }

    /// object-add: QEMU's shape, {"qom-type": "iothread", "id": ..., poll-max-ns ...}.
    func objectAdd(_ arguments: JSONObject) throws(QMPError) -> JSONValue {
        for key in ["qom-type", "id"] { try requireString(key, in: arguments) }
        if case .string("secret")? = arguments["qom-type"] {
            try target.secretAdd(try optionsFromJSON(arguments, with: secretObjectOptions))
            return .emptyObject
        }
        let options = try optionsFromJSON(arguments, with: iothreadObjectOptions)
        try target.objectAdd(options)
        return .emptyObject
    }

    func objectDel(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let id = try arguments.requiredString("id")
        try arguments.finish()
        try target.objectDel(id: id)
        return .emptyObject
    }

    /// x-queue-move {"id": EXPORT, "queue": N, "iothread": ID}
    func moveQueue(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let id = try arguments.requiredString("id")
        let queue = try arguments.requiredInt64("queue")
        let iothread = try arguments.requiredString("iothread")
        try arguments.finish()
        guard queue >= 0, queue < 65536 else { throw QMPError("Parameter 'queue' expects a queue number") }
        try await target.moveQueue(exportID: id, queue: Int(queue), iothread: iothread)
        return .emptyObject
    }

    func queryIOThreads(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        try arguments.finish()
        return .array(target.queryIOThreads().map(QMPQueryShapes.iothread))
    }

    /// The option parsers' errors are GenericErrors with the same text.
    private func optionsFromJSON<T>(_ arguments: JSONObject,
                                    with parse: (JSONObject) throws(CommandLineError) -> T) throws(QMPError) -> T {
        do {
            return try parse(arguments)
        } catch {
            throw QMPError(error.message)
        }
    }

    private func requireString(_ key: String, in arguments: JSONObject) throws(QMPError) {
        guard let value = arguments[key] else { throw CommandArguments.missing(key) }
        guard case .string = value else { throw QMPError("Invalid parameter type for '\(key)', expected: string") }
    }
}
