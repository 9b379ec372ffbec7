/// A parsed option value before it is given a meaning: what keyval and JSON both turn into.
///
/// Keyval text only ever produces `.string` leaves (their type comes from the key that reads them);
/// JSON produces typed leaves that must already have the right type.
enum OptionValue: Equatable, Sendable {
    case string(String)
    case bool(Bool)
    /// A JSON number, kept as written so integers of any size convert exactly.
    case number(String)
    case null
    case array([OptionValue])
    case object(OptionObject)

    /// How a wrong-type message names this value.
    var typeName: String {
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
struct OptionObject: Equatable, Sendable {
    struct Entry: Equatable, Sendable {
        var key: String
        var value: OptionValue
    }

    private(set) var entries: [Entry] = []

    subscript(key: String) -> OptionValue? {
        get { entries.first(where: { $0.key == key })?.value }
        set {
            if let index = entries.firstIndex(where: { $0.key == key }) {
                if let newValue { entries[index].value = newValue } else { entries.remove(at: index) }
            } else if let newValue {
                entries.append(Entry(key: key, value: newValue))
            }
        }
    }

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
