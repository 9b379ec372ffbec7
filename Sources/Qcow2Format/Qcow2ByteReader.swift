/// Big-endian field reads from an image's bytes, every one bounds-checked (a short buffer
/// reads as a format error, never out of range).
struct Qcow2ByteReader {
    let bytes: UnsafeRawBufferPointer

    func u8(_ offset: Int) throws(Qcow2FormatError) -> UInt8 {
        guard offset >= 0, offset < bytes.count else { throw Qcow2FormatError(.corrupt, "header ends before byte \(offset)") }
        return bytes[offset]
    }

    func u32(_ offset: Int) throws(Qcow2FormatError) -> UInt32 {
        guard offset >= 0, offset <= bytes.count - 4 else { throw Qcow2FormatError(.corrupt, "header ends before byte \(offset + 4)") }
        var value: UInt32 = 0
        for i in 0..<4 { value = value << 8 | UInt32(bytes[offset + i]) }
        return value
    }

    func u64(_ offset: Int) throws(Qcow2FormatError) -> UInt64 {
        guard offset >= 0, offset <= bytes.count - 8 else { throw Qcow2FormatError(.corrupt, "header ends before byte \(offset + 8)") }
        var value: UInt64 = 0
        for i in 0..<8 { value = value << 8 | UInt64(bytes[offset + i]) }
        return value
    }

    func slice(_ offset: Int, _ count: Int) throws(Qcow2FormatError) -> [UInt8] {
        guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else {
            throw Qcow2FormatError(.corrupt, "header ends before byte \(offset + count)")
        }
        return Array(bytes[offset..<(offset + count)])
    }
}
