import BlockCommon

/// `--object throttle-group,id=ID,...` in QEMU's two spellings: the `limits` object
/// (`limits.iops-total=5000`, JSON `"limits": {"iops-total": 5000}`) and the flat
/// properties (`x-iops-total=5000`). Each of the six buckets takes `<name>`, `<name>-max`
/// and `<name>-max-length`; `iops-size` too. Limits are checked as QEMU checks them.
enum ThrottleGroupParser {
    /// The keys of one spelling: `prefix` is "limits." or "x-".
    static func limitKeys(prefix: String) -> [String] {
        ThrottleBucketKind.allCases.flatMap { kind in
            [kind.name, kind.name + "-max", kind.name + "-max-length"].map { prefix + $0 }
        } + [prefix + "iops-size"]
    }

    static let keys = ["qom-type", "id"] + limitKeys(prefix: "limits.") + limitKeys(prefix: "x-")

    static func parse(_ reader: OptionReader) throws(CommandLineError) -> ThrottleGroupOptions {
        try reader.rejectUnknownKeys(allowed: keys, context: "throttle-group")
        let id = try reader.identifier("id", hint: "name the group, e.g. id=tg0")
        var limits = try parseLimits(reader, prefix: "limits.")
        // The flat x- properties add to (and must not contradict) the limits object.
        let flat = try parseLimits(reader, prefix: "x-")
        for kind in ThrottleBucketKind.allCases {
            limits[kind] = try merged(limits[kind], flat[kind], name: kind.name, reader)
        }
        if flat.iopsSize != 0 {
            guard limits.iopsSize == 0 || limits.iopsSize == flat.iopsSize else {
                throw reader.error("'limits.iops-size' and 'x-iops-size' differ; give one of them")
            }
            limits.iopsSize = flat.iopsSize
        }
        if let problem = limits.validationError { throw reader.error(problem) }
        return ThrottleGroupOptions(id: id, limits: limits)
    }

    /// The limits under `prefix`; absent keys keep `base`'s value (default: no limit, burst
    /// length 1). Not validated.
    static func parseLimits(_ reader: OptionReader, prefix: String, over base: ThrottleLimits = ThrottleLimits()) throws(CommandLineError) -> ThrottleLimits {
        var limits = base
        for kind in ThrottleBucketKind.allCases {
            let key = prefix + kind.name
            limits[kind] = ThrottleBucketLimit(average: try reader.unsigned(key) ?? base[kind].average,
                                               max: try reader.unsigned(key + "-max") ?? base[kind].max,
                                               maxLength: try reader.unsigned(key + "-max-length") ?? base[kind].maxLength)
        }
        limits.iopsSize = try reader.unsigned(prefix + "iops-size") ?? base.iopsSize
        return limits
    }

    private static func merged(_ a: ThrottleBucketLimit, _ b: ThrottleBucketLimit, name: String,
                               _ reader: OptionReader) throws(CommandLineError) -> ThrottleBucketLimit {
        let none = ThrottleBucketLimit()
        if b == none { return a }
        if a == none { return b }
        guard a == b else { throw reader.error("'limits.\(name)' and 'x-\(name)' differ; give one of them") }
        return a
    }
}

/// `driver=throttle,node-name=N,throttle-group=G,file=CHILD` (QEMU's throttle filter).
enum ThrottleFilterParser {
    static let keys = ["node-name", "file", "throttle-group", "driver", "active"]

    static func parse(_ reader: OptionReader, nodeNameHint: String) throws(CommandLineError) -> BlockdevOptions {
        if case .object = try reader.value(at: "file") {
            throw reader.error("'file' must name an existing node (e.g. file=disk0), not describe a new one")
        }
        try reader.rejectUnknownKeys(allowed: keys, context: "driver throttle")
        let nodeName = try reader.nodeName("node-name", hint: nodeNameHint)
        let child = try reader.nodeName("file", hint: "the node-name of the node to throttle, defined before this one")
        guard child != nodeName else { throw reader.error("a throttle node cannot filter itself (file=\(child))") }
        let group = try reader.identifier("throttle-group", hint: "the id of a --object throttle-group defined before this node")
        return BlockdevOptions(nodeName: nodeName, driver: .throttle(ThrottleFilterOptions(child: child, group: group)))
    }
}
