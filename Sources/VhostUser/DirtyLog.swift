#if canImport(Glibc)
import Glibc
#endif

/// The dirty log the frontend shared with SET_LOG_BASE (LOG_SHMFD): a memfd mapped shared and
/// read-write, unmapped when this goes away. Built and released on the control thread; the
/// queues only ever see its `bitmap`, and the session releases it only after every queue has
/// switched away from it.
public final class DirtyLog: @unchecked Sendable {
    /// The largest log accepted: 1 GiB covers 32 TiB of guest memory.
    public static let maximumSize: UInt64 = 1 << 30

    public let bitmap: DirtyLogBitmap
    public let size: UInt64
    private let mapBase: UnsafeMutableRawPointer
    private let mapLength: Int

    /// Maps `size` bytes of `fd` at `offset`. Does not take `fd` (the caller closes it).
    public static func map(_ description: VhostUserLogDescription, fd: Int32?) throws(DirtyLogError) -> DirtyLog {
        let size = description.mmapSize
        let offset = description.mmapOffset
        guard let fd, fd >= 0 else { throw .noFileDescriptor }
        guard size > 0, size % 8 == 0, size <= maximumSize else { throw .invalidSize(size) }
        // The words are updated atomically: they must be 8-byte aligned.
        guard offset % 8 == 0 else { throw .invalidOffset(offset, size: size) }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        // mmap wants a page-aligned file offset; QEMU sends 0.
        let alignedOffset = offset & ~(page - 1)
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow, offset <= UInt64(Int64.max) - size else { throw .invalidOffset(offset, size: size) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .notAFile(errno: errno) }
        if info.st_mode & S_IFMT == S_IFREG {
            // Touching a page past the file's end would kill the daemon with SIGBUS.
            guard info.st_size >= 0, UInt64(info.st_size) >= end else {
                throw .fileTooShort(needed: end, fileSize: Int64(info.st_size))
            }
            _ = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)
        }
        let length = Int(end - alignedOffset)
        let result = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(alignedOffset))
        guard let base = result, base != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw .mmapFailed(errno: errno)
        }
        let start = base + Int(offset - alignedOffset)
        return DirtyLog(bitmap: DirtyLogBitmap(words: start.bindMemory(to: UInt64.self, capacity: Int(size / 8)),
                                               wordCount: Int(size / 8)),
                        size: size, mapBase: base, mapLength: length)
    }

    private init(bitmap: DirtyLogBitmap, size: UInt64, mapBase: UnsafeMutableRawPointer, mapLength: Int) {
        self.bitmap = bitmap
        self.size = size
        self.mapBase = mapBase
        self.mapLength = mapLength
    }

    deinit {
        munmap(mapBase, mapLength)
    }
}

/// Why a SET_LOG_BASE log could not be used. For the operator's log.
public enum DirtyLogError: Error, Sendable, Equatable, CustomStringConvertible {
    case noFileDescriptor
    case invalidSize(UInt64)
    case invalidOffset(UInt64, size: UInt64)
    case notAFile(errno: Int32)
    case fileTooShort(needed: UInt64, fileSize: Int64)
    case mmapFailed(errno: Int32)

    public var description: String {
        switch self {
        case .noFileDescriptor:
            return "the message carried no file descriptor"
        case .invalidSize(let size):
            return "log size \(size) is not a positive multiple of 8 up to \(DirtyLog.maximumSize) bytes"
        case .invalidOffset(let offset, let size):
            return "log offset \(offset) (size \(size)) is not 8-byte aligned or runs past the end of the file"
        case .notAFile(let e):
            return "cannot stat the log's file descriptor: \(String(cString: strerror(e)))"
        case .fileTooShort(let needed, let fileSize):
            return "the log's file has \(fileSize) bytes, \(needed) needed"
        case .mmapFailed(let e):
            return "mmap of the log failed: \(String(cString: strerror(e)))"
        }
    }
}
