import CSpindle
#if canImport(Glibc)
import Glibc
#endif

/// The kick and call eventfds of every queue; closes them when released (also when setup
/// fails half-way).
final class QueueNotifiers {
    private(set) var kick: [Int32] = []
    private(set) var call: [Int32] = []

    /// Creates one blocking kick/call pair.
    func makePair() throws(FrontendError) -> (kick: Int32, call: Int32) {
        let kickFD = eventfd(0, Int32(EFD_CLOEXEC))
        guard kickFD >= 0 else { throw FrontendError("eventfd failed: \(errnoText(errno))") }
        kick.append(kickFD)
        let callFD = eventfd(0, Int32(EFD_CLOEXEC))
        guard callFD >= 0 else { throw FrontendError("eventfd failed: \(errnoText(errno))") }
        call.append(callFD)
        return (kickFD, callFD)
    }

    deinit {
        for fd in kick + call { Glibc.close(fd) }
    }
}
