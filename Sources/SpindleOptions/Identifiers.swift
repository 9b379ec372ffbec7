import BlockCommon

/// Checks for the ids options give each other (node-name, export id, iothread id, chardev id).
extension OptionReader {
    /// QEMU keeps node names in a 32-byte buffer, so at most 31 bytes.
    static let maximumNodeNameLength = 31
    /// Longest `sun_path` a UNIX socket can bind (108 bytes including the terminating NUL).
    static let maximumSocketPathLength = 107

    /// A required id following QEMU's rule: a letter, then letters, digits, '-', '.', '_'.
    func identifier(_ path: String, hint: String = "") throws(CommandLineError) -> String {
        let id = try requiredString(path, hint: hint)
        guard NodeName.isValid(id) else {
            throw error("invalid \(path) '\(id)' (start with a letter, then use letters, digits, '-', '.' or '_')")
        }
        return id
    }

    func nodeName(_ path: String, hint: String = "") throws(CommandLineError) -> NodeName {
        let name = try identifier(path, hint: hint)
        guard name.utf8.count <= Self.maximumNodeNameLength else {
            throw error("\(path) '\(name)' is too long (at most \(Self.maximumNodeNameLength) characters)")
        }
        return NodeName(name)
    }

    /// A UNIX socket path that fits in `sockaddr_un`.
    func socketPath(_ path: String, hint: String = "") throws(CommandLineError) -> String {
        let socket = try requiredString(path, hint: hint)
        guard !socket.isEmpty else { throw error("'\(path)' must not be empty") }
        guard socket.utf8.count <= Self.maximumSocketPathLength else {
            throw error("socket path in '\(path)' is too long (\(socket.utf8.count) bytes; UNIX sockets allow at most \(Self.maximumSocketPathLength))")
        }
        return socket
    }
}
