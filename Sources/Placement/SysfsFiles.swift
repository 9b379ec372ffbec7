import Glibc

/// Reads small text files under a sysfs-shaped root, turning every failure into a
/// `TopologyError` that names the file.
struct SysfsFiles {
    let root: String

    /// The absolute path of `relative` (e.g. "devices/system/node/online") under the root.
    func path(_ relative: String) -> String {
        root.hasSuffix("/") ? root + relative : root + "/" + relative
    }

    func isDirectory(_ relative: String) -> Bool {
        var info = stat()
        return stat(path(relative), &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    func exists(_ relative: String) -> Bool {
        access(path(relative), F_OK) == 0
    }

    /// The whole file as text. Sysfs attributes are at most a page, but the read loops anyway.
    func readText(_ relative: String) throws(TopologyError) -> String {
        let fullPath = path(relative)
        let fd = open(fullPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TopologyError(file: fullPath, problem: "cannot open: \(errnoText())") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw TopologyError(file: fullPath, problem: "cannot read: \(errnoText())")
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            guard bytes.count <= 1 << 20 else { throw TopologyError(file: fullPath, problem: "larger than 1 MiB") }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw TopologyError(file: fullPath, problem: "not valid UTF-8 text")
        }
        return text
    }

    /// A file in the kernel's list format ("0-3,8").
    func readList(_ relative: String) throws(TopologyError) -> [Int] {
        let text = try readText(relative)
        do {
            return try CPUList.parse(text)
        } catch {
            throw TopologyError(file: path(relative), problem: error.description)
        }
    }

    /// A file of whitespace-separated decimal numbers (a node's `distance` row).
    func readNumbers(_ relative: String) throws(TopologyError) -> [Int] {
        let text = try readText(relative)
        var numbers: [Int] = []
        for word in text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }) {
            guard word.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(word) else {
                throw TopologyError(file: path(relative), problem: "'\(word)' is not a number in \"\(text.trimmingWhitespace())\"")
            }
            numbers.append(value)
        }
        return numbers
    }

    private func errnoText() -> String {
        let code = errno
        return String(cString: strerror(code))
    }
}
