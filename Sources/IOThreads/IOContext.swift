import CSpindle
import Glibc

/// One IOThread's io_uring, as the I/O side sees it: drivers take SQEs from it; the owning
/// IOThread submits and reaps. Used only by the thread that owns it.
public final class IOContext: @unchecked Sendable {
    public let ring: UnsafeMutablePointer<io_uring>
    public let entries: UInt32

    /// Creates the ring. Call on the thread that will own it.
    public init(entries: UInt32) throws(IOContextError) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        self.entries = entries
        var params = io_uring_params()
        // A completion queue four times the submission queue: every request slot of every queue
        // served by this thread must be able to complete without overflowing it.
        params.flags = UInt32(IORING_SETUP_CQSIZE)
        params.cq_entries = entries * 4
        let rc = io_uring_queue_init_params(entries, ring, &params)
        guard rc == 0 else {
            ring.deallocate()
            throw IOContextError(errno: -rc)
        }
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    /// A submission entry, submitting what is queued if the SQ is full. nil only if the kernel
    /// refuses submissions (then the caller fails its request).
    @inline(__always)
    public func sqe() -> UnsafeMutablePointer<io_uring_sqe>? {
        if let sqe = io_uring_get_sqe(ring) { return sqe }
        _ = io_uring_submit(ring)
        return io_uring_get_sqe(ring)
    }

    /// Hands what is queued to the kernel now instead of at the end of the thread's pass.
    @inline(__always)
    public func submitNow() {
        _ = io_uring_submit(ring)
    }
}

public struct IOContextError: Error, CustomStringConvertible, Sendable {
    public let errno: Int32
    public var description: String {
        "cannot set up io_uring: \(String(cString: strerror(errno))) (is io_uring disabled by sysctl kernel.io_uring_disabled?)"
    }
}
