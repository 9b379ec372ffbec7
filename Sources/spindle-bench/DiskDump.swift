#if canImport(Glibc)
import Glibc
#endif
import VhostUserFrontend

/// `spindle-bench --socket PATH --dump FILE [--bs BYTES]`: reads the whole disk through the
/// socket, in order, one request at a time, into FILE: what tests compare with a reference
/// (e.g. `qemu-img convert -O raw` of the image the backend serves). Requests of --bs bytes
/// (default 192 KiB: not a power of two, so requests straddle clusters in every way).
enum DiskDump {
    static func run(_ arguments: [String]) throws(BenchFailure) {
        var socket: String?
        var output: String?
        var blockSize = 192 * 1024
        var index = 0
        while index < arguments.count {
            let name = arguments[index]
            guard index + 1 < arguments.count else { throw BenchFailure("\(name) needs a value") }
            let value = arguments[index + 1]
            switch name {
            case "--socket": socket = value
            case "--dump": output = value
            case "--bs":
                guard let bytes = Int(value), bytes >= 512, bytes % 512 == 0, bytes <= 64 << 20 else {
                    throw BenchFailure("--bs must be a multiple of 512 up to 64M, in bytes")
                }
                blockSize = bytes
            default: throw BenchFailure("--dump takes only --socket, --dump and --bs, not \(name)")
            }
            index += 2
        }
        guard let socket, let output else { throw BenchFailure("--dump needs --socket PATH and --dump FILE") }
        let fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BenchFailure("cannot create \(output): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let frontend: VhostUserBlkFrontend
        do { frontend = try VhostUserBlkFrontend(socketPath: socket, options: FrontendOptions(slotsPerQueue: 1, maxRequestBytes: blockSize)) } catch {
            throw BenchFailure(error.description)
        }
        guard let capacity = frontend.config?.capacityBytes else { throw BenchFailure("the backend reported no capacity") }
        var queue = frontend.queues[0]
        var offset: UInt64 = 0
        while offset < capacity {
            let bytes = Int(min(UInt64(blockSize), capacity - offset))
            queue.prepare(slot: 0, type: .read, sector: offset / 512, byteCount: bytes)
            let status = try queue.runSlotZero(within: 20, what: "read at \(offset)")
            guard status == BlkStatus.ok else {
                throw BenchFailure("read of \(bytes) bytes at \(offset) failed with status \(status)")
            }
            guard pwrite(fd, queue.data(of: 0), bytes, off_t(offset)) == bytes else {
                throw BenchFailure("cannot write \(output): \(String(cString: strerror(errno)))")
            }
            offset += UInt64(bytes)
        }
        do { try frontend.shutdown(finalQueues: [queue]) } catch { throw BenchFailure(error.description) }
    }
}
