import BlockCommon

/// The export's queue-to-IOThread options: `iothread=ID` (every queue), a list
/// (`"iothread": ["a", "b"]` in JSON, `iothread.0=a,iothread.1=b` in keyval; round-robin), or
/// QEMU 9's `iothread-vq-mapping` (`[{"iothread": "a", "vqs": [0, 2]}, {"iothread": "b"}]`).
struct IOThreadMappingParser {
    static func parse(_ reader: OptionReader, into export: inout VhostUserBlkExportOptions) throws(CommandLineError) {
        let single = try reader.value(at: "iothread")
        let mapping = try reader.value(at: "iothread-vq-mapping")
        if single != nil && mapping != nil {
            throw reader.error("give either 'iothread' or 'iothread-vq-mapping', not both")
        }
        switch single {
        case nil:
            break
        case .string(let id)?:
            export.iothread = id
        case let value?:
            let ids = try list(value, reader: reader, path: "iothread")
            export.iothreadMapping = try ids.enumerated().map { index, item throws(CommandLineError) in
                guard case .string(let id) = item else { throw reader.error("'iothread.\(index)' must be an iothread id") }
                return IOThreadVQMapping(iothread: id)
            }
        }
        if let mapping {
            let entries = try list(mapping, reader: reader, path: "iothread-vq-mapping")
            export.iothreadMapping = try entries.enumerated().map { index, entry throws(CommandLineError) in
                try self.entry(entry, index: index, reader: reader)
            }
        }
        try validate(export, reader: reader)
    }

    /// A JSON array, or a keyval object whose keys are 0, 1, 2, ...
    private static func list(_ value: OptionValue, reader: OptionReader, path: String) throws(CommandLineError) -> [OptionValue] {
        switch value {
        case .array(let items):
            return items
        case .object(let object):
            var items: [OptionValue] = []
            while let item = object[String(items.count)] { items.append(item) }
            let topLevelKeys = Set(object.leafPaths.map { $0.split(separator: ".").first.map(String.init) ?? "" })
            guard topLevelKeys.count == items.count else {
                throw reader.error("'\(path)' must be a list (\(path).0, \(path).1, ...)")
            }
            return items
        default:
            throw reader.error("'\(path)' must be an iothread id or a list, not \(value.typeName)")
        }
    }

    private static func entry(_ value: OptionValue, index: Int, reader: OptionReader) throws(CommandLineError) -> IOThreadVQMapping {
        guard case .object(let object) = value, case .string(let id)? = object["iothread"] else {
            throw reader.error("'iothread-vq-mapping.\(index)' must be an object with 'iothread' and optional 'vqs'")
        }
        for key in object.leafPaths.map({ String($0.split(separator: ".").first ?? "") }) where key != "iothread" && key != "vqs" {
            throw reader.error("unknown key '\(key)' in 'iothread-vq-mapping.\(index)' (takes: iothread, vqs)")
        }
        guard let vqsValue = object["vqs"] else { return IOThreadVQMapping(iothread: id) }
        let items = try list(vqsValue, reader: reader, path: "iothread-vq-mapping.\(index).vqs")
        let vqs = try items.map { item throws(CommandLineError) -> Int in
            switch item {
            case .number(let text), .string(let text):
                guard let n = Int(text), n >= 0 else { throw reader.error("'iothread-vq-mapping.\(index).vqs' must hold queue numbers, not '\(text)'") }
                return n
            default:
                throw reader.error("'iothread-vq-mapping.\(index).vqs' must hold queue numbers")
            }
        }
        return IOThreadVQMapping(iothread: id, vqs: vqs)
    }

    /// QEMU's rules: vqs in all entries or none; with vqs, each queue exactly once.
    private static func validate(_ export: VhostUserBlkExportOptions, reader: OptionReader) throws(CommandLineError) {
        let mapping = export.iothreadMapping
        guard !mapping.isEmpty else { return }
        let withVQs = mapping.filter { $0.vqs != nil }.count
        guard withVQs == 0 || withVQs == mapping.count else {
            throw reader.error("iothread-vq-mapping: give 'vqs' in every entry or in none (then queues go round-robin)")
        }
        guard withVQs > 0 else { return }
        var seen = Set<Int>()
        for vq in mapping.flatMap({ $0.vqs ?? [] }) {
            guard vq < export.numQueues else {
                throw reader.error("iothread-vq-mapping: queue \(vq) does not exist (num-queues=\(export.numQueues))")
            }
            guard seen.insert(vq).inserted else { throw reader.error("iothread-vq-mapping: queue \(vq) is mapped twice") }
        }
        guard seen.count == export.numQueues else {
            let missing = (0..<export.numQueues).filter { !seen.contains($0) }.map(String.init).joined(separator: ", ")
            throw reader.error("iothread-vq-mapping: queue(s) \(missing) are not mapped to any iothread")
        }
    }
}
