import CSpindle
import Glibc
import IOThreads

public enum BlockOperation: UInt8, Sendable {
    case read, write, flush, discard, writeZeroes
}

/// One block request, living in a caller's preallocated slot: the caller fills the operation,
/// range and iovecs (pointing into guest memory: zero copy) and the completion token; the
/// driver may use the scratch fields (bounce buffer, stage) across its SQEs. No allocation
/// per request: a bounce buffer, once grown, stays with the slot.
public struct BlockRequest {
    public var operation: BlockOperation = .read
    /// Write with Force Unit Access: durable before it completes.
    public var fua = false
    /// Write-zeroes may deallocate (punch a hole) instead of writing.
    public var mayUnmap = false
    public var offset: UInt64 = 0
    public var length: UInt64 = 0
    public var iov: UnsafeMutablePointer<iovec>? = nil
    public var iovcnt: Int32 = 0
    /// user_data for the SQEs this request produces.
    public var token = CompletionToken(rawValue: 0)

    // Driver scratch.
    public var stage: UInt8 = 0
    /// A filter driver's own stage (the driver below it owns `stage`), e.g. the mirror
    /// filter's "now writing the copy to the target".
    public var filterStage: UInt8 = 0
    /// The delay filter's (x-delay) own: whether this request's completion is held, and
    /// the result it will give when the hold ends. Apart from `filterStage` so that a
    /// mirror filter can sit above an x-delay node.
    public var holdStage: UInt8 = 0
    public var heldResult: Int32 = 0
    /// The throttle filter's own: where the request is (waiting, its timer, released), its
    /// place in the group's arrival order, and the next request waiting on the same IOThread
    /// (the wait queue is a list through the requests' slots: nothing allocated).
    public var throttleStage: UInt8 = 0
    public var throttleTicket: UInt64 = 0
    public var throttleNext: UnsafeMutablePointer<BlockRequest>? = nil
    /// The rbd driver's: the result librbd gave, carried to `complete` by a NOP CQE.
    public var driverResult: Int32 = 0
    /// The rbd driver's: the io_uring (its fd) of the IOThread that submitted the request,
    /// where its completion must arrive (the node's completion watcher may run elsewhere).
    public var driverOwnerRing: Int32 = -1
    public var bounce: UnsafeMutableRawPointer? = nil
    public var bounceCapacity = 0
    public var bounceInUse = false
    public var bounceIOV = iovec()
    /// An image format driver's own (qcow2): guest bytes of the request done so far, the
    /// length of the piece in flight, and which L2 table (chain depth, L1 index) its
    /// scratch holds (depth 0xff: none).
    public var formatDone: UInt64 = 0
    public var formatPiece: UInt64 = 0
    public var formatPieceOffset: UInt64 = 0
    public var formatTableDepth: UInt8 = 0xff
    public var formatTableIndex: UInt64 = 0
    public var formatClusterBits: UInt8 = 0
    /// The qcow2 L2 cache's generation when this request started reading a table (a table
    /// read before an allocation changed it is not cached).
    public var formatTableGeneration: UInt64 = 0
    /// The qcow2 allocation worker's queue: the next request waiting for it (a list through
    /// the slots, nothing allocated). The worker also uses `driverResult` and
    /// `driverOwnerRing` (a qcow2 node's requests never reach an rbd driver).
    public var formatNext: UnsafeMutablePointer<BlockRequest>? = nil

    public init() {}

    /// Makes sure the bounce buffer holds `bytes`, aligned to `alignment`. Allocates only
    /// when it must grow (rare: unaligned guest buffers with O_DIRECT). false if out of memory.
    public mutating func reserveBounce(bytes: Int, alignment: Int) -> Bool {
        if bounceCapacity >= bytes, let buffer = bounce, Int(bitPattern: buffer) % alignment == 0 { return true }
        free(bounce)
        bounce = nil
        bounceCapacity = 0
        var pointer: UnsafeMutableRawPointer? = nil
        let rounded = (bytes + 4095) & ~4095
        guard posix_memalign(&pointer, max(alignment, 4096), rounded) == 0, let pointer else { return false }
        bounce = pointer
        bounceCapacity = rounded
        return true
    }

    /// Frees the scratch buffer; the slot's owner calls it when the slot goes away.
    public mutating func releaseScratch() {
        free(bounce)
        bounce = nil
        bounceCapacity = 0
    }

    /// Total bytes described by the iovecs.
    public var iovByteCount: UInt64 {
        guard let iov else { return 0 }
        var total: UInt64 = 0
        for i in 0..<Int(iovcnt) { total &+= UInt64(iov[i].iov_len) }
        return total
    }
}

/// What submitting a request gave: queued (a CQE carrying its token will come) or done now.
public enum SubmitResult: Equatable {
    case queued
    /// Finished without the kernel: bytes transferred (or 0) on success, -errno on failure.
    case done(Int32)
}
