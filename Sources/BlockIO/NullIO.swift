import CSpindle
import Glibc
import IOThreads
import Synchronization

/// The `null-co` driver's data path: every request completes at once, without the kernel.
/// Reads fill the buffers with zeroes only with read-zeroes=on (as QEMU's null-co).
public final class NullIO: BlockDriverIO {
    public let readZeroes: Bool
    public let writable: Bool
    private let size: Atomic<UInt64>

    public init(length: UInt64, readZeroes: Bool, writable: Bool) {
        self.readZeroes = readZeroes
        self.writable = writable
        self.size = Atomic(length)
    }

    public var length: UInt64 { size.load(ordering: .relaxed) }

    package func setLength(_ newLength: UInt64) { size.store(newLength, ordering: .releasing) }

    public func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult {
        switch request.pointee.operation {
        case .read:
            if readZeroes, let iov = request.pointee.iov {
                for i in 0..<Int(request.pointee.iovcnt) { memset(iov[i].iov_base, 0, iov[i].iov_len) }
            }
            return .done(Int32(truncatingIfNeeded: request.pointee.length))
        case .write:
            return .done(Int32(truncatingIfNeeded: request.pointee.length))
        case .flush, .discard, .writeZeroes:
            return .done(0)
        }
    }

    public func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32? {
        result
    }
}
