import SpindleOptions

/// Input: command-line arguments separated by NUL bytes (invalid UTF-8 repaired as
/// `String(decoding:)` does, like a Swift argv). Any outcome but a crash is fine.
func fuzzCommandLine(_ input: UnsafeRawBufferPointer) {
    let arguments = input.split(separator: 0, omittingEmptySubsequences: false)
        .prefix(64)
        .map { String(decoding: $0, as: UTF8.self) }
    _ = try? parseCommandLine(arguments)
}
