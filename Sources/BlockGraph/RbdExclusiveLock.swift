import BlockCommon
import ControlThread
import CSpindle
import Glibc
import Logging

/// An rbd node's ownership of its image: RBD's exclusive lock, taken explicitly while the
/// node is active and some user writes, released when none does (an inactive node's users
/// count as none). librbd's default is cooperative: a client that wants to write asks the
/// holder, which hands the lock over, so two daemons would take turns writing one image.
/// An explicitly acquired lock (rbd_lock_acquire) is never handed over: librbd switches the
/// holder to its standard policy, which answers every request with EROFS, so another
/// client's writes fail (and its rbd_lock_acquire fails) until this one releases it.
/// Maintenance operations from others (`rbd resize`, snapshots) still work: librbd sends
/// them to the holder, which carries them out. Control thread only (both calls wait on the
/// cluster, bounded by the connection's operation timeouts).
@ControlActor
struct RbdExclusiveLock {
    let image: UnsafeMutableRawPointer
    let node: NodeName
    let imageName: String
    private(set) var held = false

    init(image: UnsafeMutableRawPointer, node: NodeName, imageName: String) {
        self.image = image
        self.node = node
        self.imageName = imageName
    }

    /// Takes or releases the lock. A refusal leaves it as it was and says why.
    mutating func set(held wanted: Bool) throws(BlockError) {
        guard wanted != held else { return }
        let logger = Logger(label: "spindle.rbd")
        if !wanted {
            let rc = spindle_rbd_lock_release(image)
            held = false
            if rc != 0 {
                // Not ours any more is what we wanted; anything else is worth a line.
                logger.warning("releasing the exclusive lock failed; closing the image releases it", metadata: [
                    "node": "\(node)", "image": "\(imageName)", "error": "\(String(cString: strerror(-rc)))"])
            } else {
                logger.notice("released the image's exclusive lock", metadata: ["node": "\(node)", "image": "\(imageName)"])
            }
            return
        }
        _ = breakDeadPredecessorsLock()  // only a provably dead predecessor's (RbdStaleLockTakeover)
        try refuseWhileAnotherClientWatches()
        let rc = spindle_rbd_lock_acquire_exclusive(image)
        switch -rc {
        case 0:
            held = true
            logger.notice("took the image's exclusive lock", metadata: ["node": "\(node)", "image": "\(imageName)"])
            recordHolder()
        case EINVAL:
            // No exclusive-lock feature on the image: nothing to take, and nothing stops
            // another client writing it. Served, with a warning.
            logger.warning("image has no exclusive-lock feature: nothing stops another host writing it at the same time (rbd feature enable IMAGE exclusive-lock)", metadata: [
                "node": "\(node)", "image": "\(imageName)"])
        case EROFS, EBUSY, EAGAIN, ETIMEDOUT:
            throw inUse(by: nil)
        default:
            throw BlockError(errno: -rc, "node '\(node)': cannot take the exclusive lock of image '\(imageName)': \(String(cString: strerror(-rc)))")
        }
    }

    /// rbd_lock_acquire against a holder that died waits, on the control thread, until the
    /// OSDs expire its watch (osd_client_watch_timeout, 30 s by default; ~29 s measured).
    /// Instead: while the holder still watches the image, refuse at once; once it does not,
    /// acquire, which breaks its lock and blocklists it. Our own automatic lock (taken by a
    /// resize before any writer) is simply made explicit.
    private func refuseWhileAnotherClientWatches() throws(BlockError) {
        if let holder = watchingHolder(evenDeadPredecessor: true) { throw inUse(by: holder) }
    }

    /// The address of another client that holds the lock and still watches the image (so
    /// taking the lock now would be refused), or nil: we hold it, nobody does, its holder
    /// died and Ceph expired its watch, its holder is this daemon's provably dead predecessor
    /// (taking the lock breaks it at once; unless `evenDeadPredecessor`), or the cluster
    /// cannot tell (acquire then decides).
    func watchingHolder(evenDeadPredecessor: Bool = false) -> String? {
        var owner = 0 as Int32
        if spindle_rbd_is_exclusive_lock_owner(image, &owner) == 0, owner != 0 { return nil }
        var address = [CChar](repeating: 0, count: 256)
        let state = spindle_rbd_lock_owner_state(image, &address, address.count)
        // An advisory lock (`rbd lock add`) is no exclusive-lock owner librbd can talk to:
        // rbd_lock_acquire would wait on it for as long as it stands. Never broken: refused.
        if state == -EBUSY { return Self.advisoryLockHolder }
        guard state == 1 else { return nil }
        let holder = address.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return evenDeadPredecessor || deadPredecessor(holding: holder) == nil ? holder : nil
    }

    /// How an advisory lock's holder is named in messages ("client ... holds its exclusive lock").
    static let advisoryLockHolder = "with an advisory lock (rbd lock add; rbd lock ls IMAGE shows it, rbd lock rm removes it)"

    private func inUse(by holder: String?) -> BlockError {
        let who = holder.map { "client \($0)" } ?? "another client"
        return BlockError(errno: EBUSY, "node '\(node)': image '\(imageName)' is in use: \(who) holds its exclusive lock (another Spindle serving it?); release it there first (blockdev-set-active with active false), or, if that host died, retry once Ceph has expired its watch (osd_client_watch_timeout, 30 s by default): the lock is then broken and the dead client blocklisted")
    }
}
