/// A command-line mistake, reported on one line: the option, what was wrong, and what to do.
///
/// `description` reads like `--export id=exp0: node 'disk9' does not exist (define it with --blockdev first)`.
public struct CommandLineError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The option the mistake is in, e.g. `--blockdev`; empty for problems not tied to one option.
    public var option: String
    /// Which instance of the option, e.g. `id=exp0`, when it is known.
    public var subject: String?
    /// What is wrong and, where it helps, what to do instead.
    public var message: String

    public init(option: String, subject: String? = nil, _ message: String) {
        self.option = option
        self.subject = subject
        self.message = message
    }

    public var description: String {
        var prefix = option
        if let subject { prefix += prefix.isEmpty ? subject : " " + subject }
        return prefix.isEmpty ? message : "\(prefix): \(message)"
    }
}
