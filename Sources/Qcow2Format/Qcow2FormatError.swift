/// Why an image's qcow2 metadata cannot be used: one line for an operator, naming the field
/// or feature. `unsupported` is a valid image using a feature Spindle does not implement;
/// `corrupt` is metadata that contradicts itself or the file.
public struct Qcow2FormatError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Not a qcow2 image at all (magic, version).
        case notQcow2
        /// A feature Spindle does not implement (encryption, external data file, ...).
        case unsupported
        /// Fields that contradict each other or the file (offsets, sizes, reserved bits).
        case corrupt
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
