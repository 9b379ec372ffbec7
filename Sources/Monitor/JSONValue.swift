import SpindleOptions

/// A JSON value as QMP sends and receives it. The same tree the command-line parser builds, so
/// `blockdev-add` / `block-export-add` arguments go straight to the `--blockdev` / `--export`
/// readers. Numbers are kept as their text, so u64 and i64 values convert exactly.
public typealias JSONValue = OptionValue
/// A JSON object with keys in insertion order (the order they are serialized in).
public typealias JSONObject = OptionObject

extension OptionValue {
    /// An integer value.
    public static func integer<T: BinaryInteger>(_ value: T) -> JSONValue { .number(String(value)) }

    /// An object from key/value pairs, in the order written.
    public static func object(_ pairs: KeyValuePairs<String, JSONValue>) -> JSONValue { .object(JSONObject(pairs)) }

    /// The empty object `{}`.
    public static var emptyObject: JSONValue { .object(JSONObject()) }
}
