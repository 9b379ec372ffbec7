import BlockCommon

/// `--blockdev driver=rbd,...` (qemu-storage-daemon's BlockdevOptionsRbd): pool, image,
/// namespace, snapshot, conf, user, key-secret, server (a list of host/port) and
/// auth-client-required (a list of cephx/none), plus read-only and discard.
struct RbdParser {
    static let keys = ["driver", "node-name", "pool", "image", "namespace", "snapshot", "conf", "user", "key-secret",
                       "server", "server.*", "auth-client-required", "auth-client-required.*", "read-only", "discard",
                       "encrypt.*"] + BlockdevParser.commonKeys

    static func parse(_ reader: OptionReader, nodeNameHint: String) throws(CommandLineError) -> BlockdevOptions {
        try reader.rejectUnknownKeys(allowed: keys, context: "driver rbd")
        let nodeName = try reader.nodeName("node-name", hint: nodeNameHint)
        guard let pool = try reader.nonEmptyString("pool") else { throw reader.missing("pool", hint: "the Ceph pool, e.g. pool=rbd") }
        guard let image = try reader.nonEmptyString("image") else { throw reader.missing("image", hint: "the RBD image in the pool") }
        if try reader.value(at: "encrypt") != nil {
            throw reader.error("encrypt is not supported yet (open the image without encryption)")
        }
        var rbd = RbdOptions(pool: pool, image: image)
        rbd.namespace = try reader.nonEmptyString("namespace")
        rbd.snapshot = try reader.nonEmptyString("snapshot")
        rbd.conf = try reader.nonEmptyString("conf")
        rbd.user = try reader.nonEmptyString("user")
        rbd.keySecret = try reader.nonEmptyString("key-secret")
        rbd.discardUnmap = try reader.choice("discard", ["unmap", "ignore"]) == "unmap"
        let readOnlyGiven = try reader.bool("read-only")
        if let snapshot = rbd.snapshot, readOnlyGiven == false {
            throw reader.error("snapshot=\(snapshot) is read-only; drop read-only=off")
        }
        let readOnly = readOnlyGiven ?? false
        // A snapshot is read-only, as in QEMU.
        rbd.readOnly = readOnly || rbd.snapshot != nil
        if let servers = try reader.value(at: "server") {
            rbd.servers = try list(servers, path: "server", reader: reader).enumerated().map { index, item throws(CommandLineError) in
                try server(item, path: "server.\(index)", reader: reader)
            }
        }
        if let auth = try reader.value(at: "auth-client-required") {
            let items: [OptionValue]
            if case .string = auth { items = [auth] } else { items = try list(auth, path: "auth-client-required", reader: reader) }
            rbd.authClientRequired = try items.map { item throws(CommandLineError) in
                guard case .string(let mode) = item, ["cephx", "none"].contains(mode) else {
                    throw reader.error("'auth-client-required' takes cephx or none")
                }
                return mode
            }
        }
        if try reader.bool("force-share") == true && !rbd.readOnly {
            throw reader.error("force-share=on requires read-only=on")
        }
        if let detect = try reader.choice("detect-zeroes", ["off", "on", "unmap"]), detect != "off" {
            throw reader.error("detect-zeroes=\(detect) is not supported (Spindle does not scan written data; use detect-zeroes=off)")
        }
        return BlockdevOptions(nodeName: nodeName, driver: .rbd(rbd))
    }

    /// A JSON array, or a keyval object whose keys are 0, 1, 2, ...
    private static func list(_ value: OptionValue, path: String, reader: OptionReader) throws(CommandLineError) -> [OptionValue] {
        switch value {
        case .array(let items):
            return items
        case .object(let object):
            var items: [OptionValue] = []
            while let item = object[String(items.count)] { items.append(item) }
            guard items.count == object.count else { throw reader.error("'\(path)' must be a list (\(path).0, \(path).1, ...)") }
            return items
        default:
            throw reader.error("'\(path)' must be a list, not \(value.typeName)")
        }
    }

    private static func server(_ value: OptionValue, path: String, reader: OptionReader) throws(CommandLineError) -> RbdServer {
        guard case .object(let object) = value, case .string(let host)? = object["host"], !host.isEmpty else {
            throw reader.error("'\(path)' must be an object with 'host' and 'port'")
        }
        for key in object.leafPaths where key != "host" && key != "port" {
            throw reader.error("unknown key '\(path).\(key)' (takes: host, port)")
        }
        let port: String
        switch object["port"] {
        case .string(let text)?, .number(let text)?:
            guard let number = UInt16(text), number > 0 else { throw reader.error("'\(path).port' must be a port number, not '\(text)'") }
            port = String(number)
        default:
            throw reader.error("missing required key '\(path).port' (the monitor's port, e.g. 6789)")
        }
        // librados takes mon_host entries as host:port; an IPv6 address needs brackets.
        guard !host.contains(",") && !host.contains(";") && !host.contains(" ") else {
            throw reader.error("'\(path).host' must be one host name or address")
        }
        return RbdServer(host: host, port: port)
    }
}
