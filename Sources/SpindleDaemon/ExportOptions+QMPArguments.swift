import BlockCommon
import Monitor
import SpindleOptions

extension VhostUserBlkExportOptions {
    /// block-export-add arguments that create this export again (what the state file records
    /// when a command-line export moves to another node). Parsing them gives back these options.
    var qmpArguments: JSONObject {
        var arguments = JSONObject([
            "type": .string("vhost-user-blk"), "id": .string(id), "node-name": .string(nodeName.rawValue),
            "addr": .object(["type": .string("unix"), "path": .string(socketPath)]),
            "writable": .bool(writable), "writethrough": .bool(writethrough),
            "num-queues": .integer(numQueues), "logical-block-size": .integer(logicalBlockSize),
            "x-inflight": .bool(inflightTracking), "allow-inactive": .bool(allowInactive),
            "x-dirty-log": .string(dirtyLogMarked ? "marked" : "unmarked"), "packed-ring": .bool(packedRing),
        ])
        if let serial { arguments["serial"] = .string(serial) }
        if let iothread { arguments["iothread"] = .string(iothread) }
        if !iothreadMapping.isEmpty {
            arguments["iothread-vq-mapping"] = .array(iothreadMapping.map { entry in
                var object = JSONObject(["iothread": .string(entry.iothread)])
                if let vqs = entry.vqs { object["vqs"] = .array(vqs.map { .integer($0) }) }
                return .object(object)
            })
        }
        return arguments
    }
}
