import BlockCommon
import ControlThread
import Glibc

/// The daemon's `secret` objects (QEMU's): id -> the secret's bytes, read when the object is
/// created. The bytes never appear in logs, errors or query output. rbd nodes look their
/// key up here when they open; a secret an open node uses cannot be deleted (the daemon
/// checks that, it knows the nodes).
@ControlActor
public final class SecretStore {
    public static let shared = SecretStore()
    private var secrets: [String: [UInt8]] = [:]

    public init() {}

    public var ids: [String] { secrets.keys.sorted() }

    public func contains(_ id: String) -> Bool { secrets[id] != nil }

    /// Creates the secret: reads its file and decodes base64 if asked.
    public func add(_ options: SecretObjectOptions) throws(BlockError) {
        guard secrets[options.id] == nil else {
            throw BlockError(errno: EEXIST, "object id '\(options.id)' is already used (pick another id)")
        }
        let raw: [UInt8]
        switch options.source {
        case .data(let text): raw = Array(text.utf8)
        case .file(let path): raw = try Self.readFile(path, id: options.id)
        }
        switch options.format {
        case .raw:
            secrets[options.id] = raw
        case .base64:
            guard let decoded = Base64.decode(raw) else {
                throw BlockError(errno: EINVAL, "secret '\(options.id)': the data is not valid base64 (format=base64)")
            }
            secrets[options.id] = decoded
        }
    }

    public func remove(_ id: String) -> Bool { secrets.removeValue(forKey: id) != nil }

    func bytes(_ id: String) -> [UInt8]? { secrets[id] }

    private static func readFile(_ path: String, id: String) throws(BlockError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw BlockError(errno: code, "secret '\(id)': cannot read '\(path)': \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                let code = errno
                throw BlockError(errno: code, "secret '\(id)': cannot read '\(path)': \(String(cString: strerror(code)))")
            }
            if n == 0 { return bytes }
            bytes += chunk[0..<n]
            guard bytes.count <= 65536 else {
                throw BlockError(errno: EFBIG, "secret '\(id)': '\(path)' is larger than 64 KiB; is it the right file?")
            }
        }
    }
}

/// Standard base64 (RFC 4648), for secrets: decoding tolerates surrounding whitespace (a
/// key file's newline); encoding is what librados' `key` option takes.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i]), b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0, b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let word = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(word >> 18 & 63)])
            out.append(alphabet[Int(word >> 12 & 63)])
            out.append(i + 1 < bytes.count ? alphabet[Int(word >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(word & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: [UInt8]) -> [UInt8]? {
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        var trimmed = text[...]
        while let last = trimmed.last, isSpace(last) { trimmed = trimmed.dropLast() }
        while let first = trimmed.first, isSpace(first) { trimmed = trimmed.dropFirst() }
        guard trimmed.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        var word: UInt32 = 0, bits = 0, padding = 0
        for c in trimmed {
            let value: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(c - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(c - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="): padding += 1; value = 0
            default: return nil
            }
            if padding > 0 && c != UInt8(ascii: "=") { return nil }  // data after padding
            word = word << 6 | value
            bits += 6
            if bits == 24 {
                out += [UInt8(word >> 16 & 0xFF), UInt8(word >> 8 & 0xFF), UInt8(word & 0xFF)]
                word = 0
                bits = 0
            }
        }
        guard padding <= 2 else { return nil }
        return Array(out.dropLast(padding))
    }
}
