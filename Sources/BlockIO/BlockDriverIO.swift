import IOThreads

/// The data path of a block node's driver. Implementations are called from IOThreads, one
/// request at a time per slot, and must not allocate, lock or block per request.
/// A driver never knows which device (BlockBackend) a request comes from.
public protocol BlockDriverIO: AnyObject, Sendable {
    /// Current size in bytes. Changes only while every user is drained (resize).
    var length: UInt64 { get }
    /// Whether writes are possible at all (false for read-only nodes).
    var writable: Bool { get }

    /// Starts `request`, taking SQEs from `context` with `request.token` as their user_data.
    func submit(_ request: UnsafeMutablePointer<BlockRequest>, on context: IOContext) -> SubmitResult

    /// Handles a CQE of `request`: returns the final result (>= 0 success, -errno failure),
    /// or nil if the driver queued another SQE for it (a later CQE will come).
    func complete(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, on context: IOContext) -> Int32?
}
