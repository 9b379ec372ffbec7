import BlockCommon
import ControlThread
import SpindleOptions

/// object-add of a throttle-group, qom-get / qom-set of a group's limits, and
/// block_set_io_throttle, in QEMU's shapes. Every change is described completely by its
/// command's arguments (qom-set merges only the members it names, as QEMU does).
@ControlActor
struct QMPThrottleCommands {
    let target: any ThrottleCommandTarget

    init(_ target: any MonitorCommandTarget, command: String) throws(QMPError) {
        guard let throttle = target as? any ThrottleCommandTarget else {
            throw QMPError(.commandNotFound, "The command \(command) has not been found")
        }
        self.target = throttle
    }

    func objectAdd(_ arguments: JSONObject) throws(QMPError) -> JSONValue {
        let object: ObjectOptions
        do {
            object = try objectOptions(fromJSONObject: arguments)
        } catch {
            throw QMPError(error.message)
        }
        guard case .throttleGroup(let group) = object else { throw QMPError("object-add: not a throttle-group") }
        try target.throttleGroupAdd(group)
        return .emptyObject
    }

    /// qom-get {"path": "tg0" or "/objects/tg0", "property": "limits" or "x-iops-total" ...}.
    func qomGet(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let id = Self.objectID(try arguments.requiredString("path"))
        let property = try arguments.requiredString("property")
        try arguments.finish()
        let limits = try target.throttleGroupLimits(id: id)
        let all = Self.limitsJSON(limits)
        if property == "limits" { return .object(all) }
        guard property.hasPrefix("x-"), let value = all[String(property.dropFirst(2))] else {
            throw QMPError(.deviceNotFound, "Property '\(property)' not found")
        }
        return value
    }

    /// qom-set {"path": ..., "property": "limits", "value": {"iops-total": 5000, ...}}: the
    /// members given replace the group's, the others stay; or one `x-` property with a number.
    func qomSet(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let id = Self.objectID(try arguments.requiredString("path"))
        let property = try arguments.requiredString("property")
        guard let value = arguments.object["value"] else { throw CommandArguments.missing("value") }
        for entry in arguments.object.entries where !["path", "property", "value"].contains(entry.key) {
            throw QMPError("Parameter '\(entry.key)' is unexpected")
        }
        let current = try target.throttleGroupLimits(id: id)
        var given = JSONObject()
        if property == "limits" {
            guard case .object(let object) = value else { throw QMPError("Invalid parameter type for 'value', expected: object") }
            given = object
        } else if property.hasPrefix("x-"), Self.limitsJSON(current)[String(property.dropFirst(2))] != nil {
            given[String(property.dropFirst(2))] = value
        } else {
            throw QMPError(.deviceNotFound, "Property '\(property)' not found")
        }
        let limits: ThrottleLimits
        do {
            limits = try throttleLimits(fromJSONObject: given, over: current)
        } catch {
            throw QMPError(error.message)
        }
        try target.setThrottleGroupLimits(id: id, limits: limits)
        return .emptyObject
    }

    /// block_set_io_throttle: QEMU's BlockIOThrottle (the six rates required).
    func blockSetIOThrottle(_ arguments: inout CommandArguments) async throws(QMPError) -> JSONValue {
        let device = try arguments.optionalString("device")
        let id = try arguments.optionalString("id")
        var limits = ThrottleLimits()
        func value(_ key: String, required: Bool, default fallback: UInt64 = 0) throws(QMPError) -> UInt64 {
            let given = try arguments.optionalInt64(key)
            if required && given == nil { throw CommandArguments.missing(key) }
            guard let number = given else { return fallback }
            guard number >= 0 else { throw QMPError("bps/iops/max values must be within [0, \(ThrottleLimits.valueMax)]") }
            return UInt64(number)
        }
        for kind in ThrottleBucketKind.allCases {
            limits[kind].average = try value(kind.legacyName, required: true)
        }
        for kind in ThrottleBucketKind.allCases {
            limits[kind].max = try value(Self.legacyMaxName(kind), required: false)
        }
        for kind in ThrottleBucketKind.allCases {
            limits[kind].maxLength = try value(Self.legacyMaxName(kind) + "_length", required: false, default: 1)
        }
        limits.iopsSize = try value("iops_size", required: false)
        let group = try arguments.optionalString("group")
        try arguments.finish()
        let name: String
        switch (device, id) {
        case (let device?, nil): name = device
        case (nil, let id?): name = id
        default: throw QMPError("Need exactly one of 'device' and 'id' (the export id)")
        }
        if let problem = limits.validationError { throw QMPError(problem) }
        try await target.setIOThrottle(IOThrottleRequest(device: name, limits: limits, group: group))
        return .emptyObject
    }

    /// `bps_max`, `iops_rd_max`, ...: QEMU puts `_max` after the direction.
    static func legacyMaxName(_ kind: ThrottleBucketKind) -> String { kind.legacyName + "_max" }

    /// QOM paths: a partial path ("tg0") or the full one ("/objects/tg0").
    static func objectID(_ path: String) -> String {
        path.hasPrefix("/objects/") ? String(path.dropFirst("/objects/".count)) : path
    }

    /// Every member of QEMU's ThrottleLimits, as qom-get shows them.
    static func limitsJSON(_ limits: ThrottleLimits) -> JSONObject {
        var members = JSONObject()
        for kind in ThrottleBucketKind.allCases {
            members[kind.name] = .integer(limits[kind].average)
            members[kind.name + "-max"] = .integer(limits[kind].max)
            members[kind.name + "-max-length"] = .integer(limits[kind].maxLength)
        }
        members["iops-size"] = .integer(limits.iopsSize)
        return members
    }
}
