#if canImport(Glibc)
import Glibc
#endif
import VhostUserFrontend

extension BlkQueue {
    /// Submits the request prepared in slot 0, kicks, and waits for its completion (polling
    /// the used ring every 100 µs, up to `seconds`); returns its virtio-blk status. What
    /// --dump and --script do: one request at a time, in order.
    mutating func runSlotZero(within seconds: Int, what: String) throws(BenchFailure) -> UInt8 {
        submit(slot: 0)
        _ = ring.publishAvailable()
        kick()
        var waited = 0
        while ring.pendingUsedCount() == 0 {
            waited += 1
            guard waited < seconds * 10_000 else { throw BenchFailure("\(what) did not complete within \(seconds) s") }
            usleep(100)
        }
        _ = ring.popUsed()
        return status(of: 0)
    }
}
