import Glibc

/// The protocol's own messages, with members in the order qemu-storage-daemon sends them.
enum QMPMessages {
    static func greeting(_ identity: QMPIdentity) -> JSONValue {
        .object(["QMP": .object([
            "version": identity.versionJSON,
            // No "oob": Spindle has no out-of-band commands to offer.
            "capabilities": .array([]),
        ])])
    }

    static func success(_ value: JSONValue, id: JSONValue?) -> JSONValue {
        var reply = JSONObject(["return": value])
        if let id { reply["id"] = id }
        return .object(reply)
    }

    static func failure(_ error: QMPError, id: JSONValue?) -> JSONValue {
        var reply = JSONObject()
        if let id { reply["id"] = id }
        reply["error"] = .object(["class": .string(error.errorClass.rawValue), "desc": .string(error.desc)])
        return .object(reply)
    }

    static func event(_ name: String, data: JSONValue?, at time: timespec) -> JSONValue {
        var message = JSONObject([
            "timestamp": .object(["seconds": .integer(time.tv_sec), "microseconds": .integer(time.tv_nsec / 1000)]),
            "event": .string(name),
        ])
        if let data { message["data"] = data }
        return .object(message)
    }

    static func now() -> timespec {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return time
    }
}

/// What `query-version` and the greeting report.
public struct QMPIdentity: Sendable, Equatable {
    public var major: Int
    public var minor: Int
    public var micro: Int
    public var package: String

    public init(major: Int, minor: Int, micro: Int, package: String) {
        self.major = major
        self.minor = minor
        self.micro = micro
        self.package = package
    }

    public static let spindle = QMPIdentity(major: 0, minor: 0, micro: 0, package: "spindle 0.1.0")

    var versionJSON: JSONValue {
        .object([
            "qemu": .object(["micro": .integer(micro), "minor": .integer(minor), "major": .integer(major)]),
            "package": .string(package),
        ])
    }
}
