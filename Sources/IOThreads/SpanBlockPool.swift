import Glibc

/// One IOThread's blocks of iovec storage for long descriptor chains. A queue's request
/// slots hold room for short chains only (the common 4-64 KiB request); a request whose
/// chain does not fit borrows a block here while it is in flight. Only in-flight requests
/// hold blocks, so a thread serving many queues needs room for its long requests in flight,
/// not for every slot of every queue it ever served.
///
/// Blocks are allocated when first needed, up to `maxBlocks` (a request that finds none waits
/// until one comes back: see `IOThread.takeSpanBlock`), and kept for reuse: no allocation per
/// request once the pool has grown. `trim` frees the unused ones (the thread calls it when a
/// queue stops). Confined to its IOThread.
public final class SpanBlockPool {
    /// iovecs per block: a chain of 512 spans and the device's copy of it.
    public static let spansPerBlock = 1024
    /// Default bound: 128 blocks of 16 KiB, 2 MiB per IOThread, room for 128 long requests
    /// in flight at once (e.g. four queues at QD32 of 1 MiB requests in 4 KiB pages).
    public static let defaultMaxBlocks = 128

    public let maxBlocks: Int
    private let free: UnsafeMutablePointer<UnsafeMutablePointer<iovec>>
    public private(set) var freeCount = 0
    /// Blocks allocated now (free or lent).
    public private(set) var allocatedCount = 0

    public init(maxBlocks: Int = SpanBlockPool.defaultMaxBlocks) {
        precondition(maxBlocks > 0)
        self.maxBlocks = maxBlocks
        free = .allocate(capacity: maxBlocks)
    }

    deinit {
        trim(keeping: 0)
        free.deallocate()
    }

    /// Blocks lent out now.
    public var inUseCount: Int { allocatedCount - freeCount }
    /// Bytes the pool holds (free and lent blocks).
    public var allocatedBytes: Int { allocatedCount * Self.spansPerBlock * MemoryLayout<iovec>.stride }

    /// A block of `spansPerBlock` iovecs, or nil when `maxBlocks` are lent out (or memory
    /// ran out).
    public func take() -> UnsafeMutablePointer<iovec>? {
        if freeCount > 0 {
            freeCount -= 1
            return free[freeCount]
        }
        guard allocatedCount < maxBlocks,
              let raw = malloc(Self.spansPerBlock * MemoryLayout<iovec>.stride) else { return nil }
        allocatedCount += 1
        return raw.bindMemory(to: iovec.self, capacity: Self.spansPerBlock)
    }

    /// Gives back a block from `take`.
    public func give(_ block: UnsafeMutablePointer<iovec>) {
        precondition(freeCount < allocatedCount, "span block given back twice")
        free[freeCount] = block
        freeCount += 1
    }

    /// Frees unused blocks beyond `keeping`.
    public func trim(keeping: Int) {
        while freeCount > max(keeping, 0) {
            freeCount -= 1
            Glibc.free(free[freeCount])
            allocatedCount -= 1
        }
    }
}
