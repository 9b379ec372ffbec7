#if canImport(Glibc)
import Glibc
#endif
import VhostUserFrontend

/// `spindle-bench --socket PATH --script FILE`: runs FILE's requests through the socket,
/// one at a time, in order, and prints "done N" (N counts from 1) on stdout as each
/// completes, so a test that kills the backend knows what was acknowledged. Lines:
/// `write OFFSET LENGTH BYTE` (LENGTH bytes of BYTE), `zero OFFSET LENGTH`, `flush`,
/// `discard OFFSET LENGTH`, `unmap OFFSET LENGTH` (write-zeroes that may deallocate)
/// (offsets and lengths in bytes, multiples of 512; BYTE as 0x5a or 90). What tests use to
/// write patterns through a backend and compare the image with a reference.
enum DiskScript {
    struct Step {
        var type: BlkRequestType
        var offset: UInt64
        var length: Int
        var byte: UInt8
        /// Write-zeroes with VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP.
        var unmap = false
    }

    static func parse(_ text: String) throws(BenchFailure) -> [Step] {
        var steps: [Step] = []
        for (number, line) in text.split(separator: "\n").enumerated() {
            let words = line.split(separator: " ").map(String.init)
            if words.isEmpty { continue }
            func number64(_ word: String) -> UInt64? { word.hasPrefix("0x") ? UInt64(word.dropFirst(2), radix: 16) : UInt64(word) }
            switch words[0] {
            case "flush" where words.count == 1:
                steps.append(Step(type: .flush, offset: 0, length: 0, byte: 0))
            case "write" where words.count == 4, "zero" where words.count == 3:
                guard let offset = number64(words[1]), let length = number64(words[2]), offset % 512 == 0, length % 512 == 0,
                      length > 0, length <= 64 << 20 else {
                    throw BenchFailure("script line \(number + 1): offset and length must be multiples of 512 (length up to 64M)")
                }
                var byte: UInt8 = 0
                if words[0] == "write" {
                    guard let value = number64(words[3]), value < 256 else { throw BenchFailure("script line \(number + 1): bad byte") }
                    byte = UInt8(value)
                }
                steps.append(Step(type: words[0] == "write" ? .write : .writeZeroes, offset: offset, length: Int(length), byte: byte))
            case "discard" where words.count == 3, "unmap" where words.count == 3:
                guard let offset = number64(words[1]), let length = number64(words[2]), offset % 512 == 0, length % 512 == 0,
                      length > 0, length <= 1 << 40 else {
                    throw BenchFailure("script line \(number + 1): offset and length must be multiples of 512")
                }
                steps.append(Step(type: words[0] == "discard" ? .discard : .writeZeroes, offset: offset, length: Int(length), byte: 0,
                                  unmap: words[0] == "unmap"))
            default:
                throw BenchFailure("script line \(number + 1): expected 'write OFFSET LENGTH BYTE', 'zero OFFSET LENGTH', 'discard OFFSET LENGTH', 'unmap OFFSET LENGTH' or 'flush'")
            }
        }
        return steps
    }

    static func run(_ arguments: [String]) throws(BenchFailure) {
        var socket: String?
        var script: String?
        var index = 0
        while index + 1 < arguments.count {
            switch arguments[index] {
            case "--socket": socket = arguments[index + 1]
            case "--script": script = arguments[index + 1]
            default: throw BenchFailure("--script takes only --socket and --script, not \(arguments[index])")
            }
            index += 2
        }
        guard let socket, let script, index == arguments.count else { throw BenchFailure("--script needs --socket PATH and --script FILE") }
        let fd = open(script, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BenchFailure("cannot open \(script): \(String(cString: strerror(errno)))") }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if got <= 0 { break }
            bytes += chunk[0..<got]
        }
        close(fd)
        let steps = try parse(String(decoding: bytes, as: UTF8.self))
        let largest = max(512, steps.filter { $0.type == .write }.map(\.length).max() ?? 512)
        let frontend: VhostUserBlkFrontend
        do { frontend = try VhostUserBlkFrontend(socketPath: socket, options: FrontendOptions(slotsPerQueue: 1, maxRequestBytes: largest)) } catch {
            throw BenchFailure(error.description)
        }
        var queue = frontend.queues[0]
        for (number, step) in steps.enumerated() {
            if step.type == .writeZeroes || step.type == .discard {
                let segment = queue.data(of: 0)
                segment.storeBytes(of: (step.offset / 512).littleEndian, as: UInt64.self)
                segment.storeBytes(of: UInt32(step.length / 512).littleEndian, toByteOffset: 8, as: UInt32.self)
                segment.storeBytes(of: UInt32(step.unmap ? 1 : 0).littleEndian, toByteOffset: 12, as: UInt32.self)
                queue.prepare(slot: 0, type: step.type, sector: 0, byteCount: 16)
            } else {
                queue.data(of: 0).initializeMemory(as: UInt8.self, repeating: step.byte, count: step.length)
                queue.prepare(slot: 0, type: step.type, sector: step.offset / 512, byteCount: step.length)
            }
            let status = try queue.runSlotZero(within: 60, what: "script step \(number + 1)")
            guard status == BlkStatus.ok else {
                throw BenchFailure("script step \(number + 1) (\(step.type) at \(step.offset)) failed with status \(status)")
            }
            var line = "done \(number + 1)\n"
            line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
        }
        do { try frontend.shutdown(finalQueues: [queue]) } catch { throw BenchFailure(error.description) }
    }
}
