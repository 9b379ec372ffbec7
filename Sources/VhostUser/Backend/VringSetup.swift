import Glibc
import IOThreads

/// What the frontend has told us about one virtqueue, kept on the control thread until the
/// ring can start (size, addresses, base, kick and call eventfds, enable state), and the
/// running queue once it has.
struct VringSetup {
    var size: UInt32?
    var addresses: SplitVirtqueue.RingAddresses?
    var base: UInt16 = 0
    /// SET_VRING_ADDR's VHOST_VRING_F_LOG flag and log_guest_addr: where the used ring is
    /// logged (nil: the flag is off).
    var usedRingLogAddress: UInt64?
    /// nil also after a SET_VRING_KICK with NOFD (`started` tells them apart): polled.
    var kickFD: Int32?
    var callFD: Int32?
    var errFD: Int32?
    var enabled = false
    /// Set by SET_VRING_KICK; cleared by GET_VRING_BASE (the spec's "started").
    var started = false
    var running: (any VhostUserDeviceQueue)?
    /// The IOThread serving `running`.
    var thread: IOThread?

    /// Closes the eventfds (the queue must not be running).
    mutating func closeFDs() {
        for fd in [kickFD, callFD, errFD].compactMap({ $0 }) { close(fd) }
        kickFD = nil
        callFD = nil
        errFD = nil
    }
}
