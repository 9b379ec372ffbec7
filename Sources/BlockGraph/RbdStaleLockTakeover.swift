import BlockCommon
import ControlThread
import CSpindle
import Glibc
import Logging

/// Restart in place after a crash: the image's exclusive lock is still held by the dead
/// process's client until Ceph expires its watch (~30 s). When the image's takeover record
/// (RbdTakeoverRecord) names the lock's current holder, and that process provably no longer
/// runs on this host, the lock is broken at once; librbd blocklists the dead client as it
/// breaks (rbd_blocklist_on_break_lock, which RbdConnection sets), so nothing it left queued
/// can write behind the new owner. Anything less certain (another host, a live process,
/// another client, no record) is left alone: the caller waits or refuses as before.
/// Control thread only (cluster round trips, bounded by the connection's timeouts).
extension RbdExclusiveLock {
    /// The watching holder's record, if it is this daemon's dead predecessor.
    func deadPredecessor(holding address: String) -> RbdTakeoverRecord? {
        var value = [CChar](repeating: 0, count: RbdTakeoverRecord.maximumLength + 1)
        guard spindle_rbd_metadata_get(image, RbdTakeoverRecord.metadataKey, &value, value.count) == 0 else { return nil }
        let text = value.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        guard let record = RbdTakeoverRecord(decoding: text), record.address == address, record.isProvablyGone else {
            return nil
        }
        return record
    }

    /// Breaks the lock if its holder is this daemon's dead predecessor; true if it did.
    func breakDeadPredecessorsLock() -> Bool {
        var ours = 0 as Int32
        if spindle_rbd_is_exclusive_lock_owner(image, &ours) == 0, ours != 0 { return false }
        var owner = [CChar](repeating: 0, count: 256)
        // 1: a holder that still watches (dead or alive); 2 (no watch) is broken by the acquire itself.
        guard spindle_rbd_lock_owner_state(image, &owner, owner.count) == 1 else { return false }
        let address = owner.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        guard let record = deadPredecessor(holding: address) else { return false }
        let logger = Logger(label: "spindle.rbd")
        let rc = spindle_rbd_lock_break_exclusive(image, address)
        guard rc == 0 else {
            logger.warning("could not break the exclusive lock of this daemon's dead predecessor; waiting for Ceph to expire its watch instead", metadata: [
                "node": "\(node)", "image": "\(imageName)", "client": "\(address)", "error": "\(String(cString: strerror(-rc)))"])
            return false
        }
        logger.notice("broke the stale exclusive lock of this daemon's dead predecessor and blocklisted its client (pid \(record.pid) on host \(record.host) no longer runs; Ceph would have kept the lock until its watch expired, ~30 s)", metadata: [
            "node": "\(node)", "image": "\(imageName)", "client": "\(address)"])
        return true
    }

    /// After taking the lock: who holds it, for a successor after a crash. A failure costs
    /// only that successor's wait, so it is a warning.
    func recordHolder() {
        let logger = Logger(label: "spindle.rbd")
        var owner = [CChar](repeating: 0, count: 256)
        guard spindle_rbd_lock_owner_state(image, &owner, owner.count) > 0 else { return }
        let address = owner.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        guard let record = RbdTakeoverRecord.thisProcess(address: address) else { return }
        let rc = spindle_rbd_metadata_set(image, RbdTakeoverRecord.metadataKey, record.encoded)
        if rc != 0 {
            logger.warning("could not record this daemon as the lock's holder in the image's metadata; after a crash, a restarted daemon waits for Ceph's watch timeout (~30 s) instead of taking the lock at once", metadata: [
                "node": "\(node)", "image": "\(imageName)", "error": "\(String(cString: strerror(-rc)))"])
        }
    }
}
