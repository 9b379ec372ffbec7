import VhostUser

// Dirty logging for migration, in the orders QEMU's vhost.c uses: start while the rings run
// (vhost_migration_log), stop on migrate_cancel, a new log when guest memory changes
// (vhost_dev_log_resize). Device start with logging on is in the initializer
// (`DirtyLogging.fromDeviceStart`).
extension VhostUserBlkFrontend {
    /// Starts dirty logging with the rings running, as QEMU when a migration starts: a new
    /// log, SET_LOG_BASE (waits for its reply), SET_FEATURES with VHOST_F_LOG_ALL, then
    /// SET_VRING_ADDR with VHOST_VRING_F_LOG and the used ring's guest-physical address for
    /// every queue (both acked with REPLY_ACK). Returns the log, also in `dirtyLog`.
    @discardableResult
    public func startDirtyLog() throws(FrontendError) -> FrontendDirtyLog {
        try requireDirtyLogging()
        guard dirtyLog == nil else { throw FrontendError("dirty logging is already on") }
        let log = try FrontendDirtyLog(coveringUpTo: memory.guestPhysicalEnd)
        try Self.sendLogBase(log, channel: channel)
        dirtyLog = log
        try setLogAll(true)
        try setVringLogging(true)
        return log
    }

    /// Stops dirty logging as QEMU on migrate_cancel: SET_FEATURES without LOG_ALL and
    /// SET_VRING_ADDR without the log flag, both without NEED_REPLY and without waiting;
    /// QEMU then frees the log without telling the backend. Returns that log: once the
    /// backend has handled the two messages (`synchronize()`), nothing more may be marked.
    @discardableResult
    public func stopDirtyLog() throws(FrontendError) -> FrontendDirtyLog? {
        try setLogAll(false, wait: false)
        try setVringLogging(false, wait: false)
        defer { dirtyLog = nil }
        return dirtyLog
    }

    /// Hands the backend a new log while logging runs (QEMU, when guest memory changes
    /// during a migration): SET_LOG_BASE with it, waiting for the reply. QEMU then syncs the
    /// old log one last time and frees it; the old log is returned for that last harvest.
    /// The backend must mark only the new one from its reply on.
    public func replaceDirtyLog() throws(FrontendError) -> FrontendDirtyLog {
        guard let old = dirtyLog else { throw FrontendError("dirty logging is off: there is no log to replace") }
        let log = try FrontendDirtyLog(coveringUpTo: memory.guestPhysicalEnd)
        try Self.sendLogBase(log, channel: channel)
        dirtyLog = log
        return old
    }

    /// SET_FEATURES with the negotiated features plus VHOST_F_LOG_ALL when `on`: one step of
    /// start and stop, public for tests that toggle it alone. `wait`: acked (REPLY_ACK)
    /// like other requests; otherwise sent without NEED_REPLY.
    public func setLogAll(_ on: Bool, wait: Bool = true) throws(FrontendError) {
        try requireDirtyLogging()
        let request = VhostUserRequest.setFeatures(negotiatedFeatures | (on ? VhostUserFeatureBits.logAll : 0))
        if wait { try channel.send(request) } else { try channel.post(request) }
        logAllSent = on
    }

    /// SET_VRING_ADDR for every queue, with VHOST_VRING_F_LOG and the used ring's
    /// guest-physical address when `on`, without them otherwise (the rings' addresses are
    /// unchanged). One step of start and stop; `wait` as in `setLogAll`.
    public func setVringLogging(_ on: Bool, wait: Bool = true) throws(FrontendError) {
        try requireDirtyLogging()
        for queue in queues {
            let request = VhostUserRequest.setVringAddr(Self.vringAddress(of: queue, memory: memory, logging: on))
            if wait { try channel.send(request) } else { try channel.post(request) }
        }
        vringLogFlagSent = on
    }

    /// Returns once the backend has handled every message sent before: a GET_FEATURES round
    /// trip (messages are handled in order), QEMU's own way to wait without REPLY_ACK.
    public func synchronize() throws(FrontendError) {
        _ = try channel.callU64(.getFeatures)
    }

    private func requireDirtyLogging() throws(FrontendError) {
        guard options.dirtyLogging != .off else {
            throw FrontendError("dirty logging was not negotiated (FrontendOptions.dirtyLogging is off)")
        }
    }

    /// SET_LOG_BASE with `log`'s memfd, then its reply. QEMU sends it without NEED_REPLY,
    /// waits for a reply all the same and looks only at the request code: libvhost-user
    /// echoes a u64, DPDK sends no payload, so any payload is accepted.
    static func sendLogBase(_ log: FrontendDirtyLog, channel: FrontendChannel) throws(FrontendError) {
        var reply = try channel.call(.setLogBase(log.logDescription, fd: log.fd))
        defer { reply.closeFileDescriptors() }
        let header = reply.header
        guard header.flags.version == VhostUserHeaderFlags.currentVersion, header.flags.contains(.reply),
              header.request == VhostUserRequestCode.setLogBase.rawValue else {
            throw FrontendError("SET_LOG_BASE: the answer is no reply to it (\(VhostUserRequestCode.name(ofRawCode: header.request)), flags 0x\(String(header.flags.rawValue, radix: 16)))")
        }
    }

    /// The queue's SET_VRING_ADDR payload; with `logging`, the log flag and the used ring's
    /// guest-physical address (QEMU's log_guest_addr).
    static func vringAddress(of queue: BlkQueue, memory: SharedMemoryRegion, logging: Bool) -> VhostUserVringAddress {
        VhostUserVringAddress(index: UInt32(queue.index), flags: logging ? VhostUserVringAddress.flagLog : 0,
                              descUserAddr: memory.userAddress(of: queue.ring.descriptors),
                              usedUserAddr: memory.userAddress(of: queue.ring.used),
                              availUserAddr: memory.userAddress(of: queue.ring.available),
                              logGuestAddr: logging ? memory.guestPhysicalAddress(of: queue.ring.used) : 0)
    }
}
