/// A parsed option value before it is given a meaning: what keyval and JSON both turn into.
/// The QMP monitor uses the same tree for its JSON messages (as `JSONValue`).
///
/// Keyval text only ever produces `.string` leaves (their type comes from the key that reads them);
/// JSON produces typed leaves that must already have the right type.
public enum OptionValue: Equatable, Sendable {
    case string(String)
    case bool(Bool)
    /// A JSON number, kept as written so integers of any size convert exactly.
    case number(String)
    case null
    case array([OptionValue])
    case object(OptionObject)

    /// How a wrong-type message names this value.
    public var typeName: String {
        switch self {
        case .string: return "a string"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .null: return "null"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// Keys and values in the order they were written.
public struct OptionObject: Equatable, Sendable {
    public struct Entry: Equatable, Sendable {
        public var key: String
        public var value: OptionValue
        public init(key: String, value: OptionValue) {
            self.key = key
            self.value = value
        }
    }

    public private(set) var entries: [Entry] = []
    // Position of each key in `entries`, so lookups and duplicate checks stay O(1) even for
    // objects with many keys (a QMP client controls the input).
    private var indexByKey: [String: Int] = [:]

    public init() {}

    public init(_ pairs: KeyValuePairs<String, OptionValue>) {
        for (key, value) in pairs { self[key] = value }
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    public subscript(key: String) -> OptionValue? {
        get { indexByKey[key].map { entries[$0].value } }
        set {
            if let index = indexByKey[key] {
                if let newValue {
                    entries[index].value = newValue
                } else {
                    entries.remove(at: index)
                    indexByKey[key] = nil
                    for later in index..<entries.count { indexByKey[entries[later].key] = later }
                }
            } else if let newValue {
                indexByKey[key] = entries.count
                entries.append(Entry(key: key, value: newValue))
            }
        }
    }

    public static func == (lhs: OptionObject, rhs: OptionObject) -> Bool { lhs.entries == rhs.entries }

    /// Every dotted path that ends in a non-object value, in written order.
    var leafPaths: [String] {
        var paths: [String] = []
        for entry in entries {
            if case .object(let child) = entry.value {
                paths += child.leafPaths.map { entry.key + "." + $0 }
            } else {
                paths.append(entry.key)
            }
        }
        return paths
    }
}
