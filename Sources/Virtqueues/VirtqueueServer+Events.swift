import CSpindle
import Glibc
import IOThreads
import VhostUser

/// Kicks, completions and polling: what the IOThread calls. A subclass that declares
/// `IOCompletionHandler & IOPoller` gets these as its witnesses.
extension VirtqueueServer {
    // MARK: kicks

    @usableFromInline
    final func armKick() {
        guard let sqe = onContext({ $0.sqe() }) else { return }
        kickGeneration &+= 1
        if let kicklessTimeout {
            // No kick eventfd (NOFD): a one-shot timeout brings the thread back to the ring;
            // handleKick re-arms it while the queue runs.
            io_uring_prep_timeout(sqe, kicklessTimeout, 0, 0)
        } else {
            io_uring_prep_poll_multishot(sqe, kickFD, UInt32(POLLIN))
        }
        sqe.pointee.user_data = kickToken
        kickArmed = true
    }

    /// The token of the kick poll (or timer) armed now: its generation tells an old poll's
    /// last CQE from the current one's.
    @usableFromInline
    final var kickToken: UInt64 {
        CompletionToken(handler: handlerID, tag: VirtqueueServerTags.kick | (kickGeneration & 0xFFFF)).rawValue
    }

    /// Asks io_uring to remove the kick poll. A removal can miss (ENOENT when submitted with
    /// the poll it targets, EALREADY while the poll is completing); it is then tried again.
    /// A kick-less ring's timer is not removed: it fires within one interval, and handleKick
    /// then does not re-arm it, which lets the stop finish.
    @usableFromInline
    final func disarmKick() {
        guard kickArmed, kicklessTimeout == nil, let sqe = onContext({ $0.sqe() }) else { return }
        io_uring_prep_poll_remove(sqe, kickToken)
        sqe.pointee.user_data = CompletionToken(handler: handlerID, tag: VirtqueueServerTags.kickRemoval).rawValue
        pendingRemovals += 1
    }

    @usableFromInline
    final func handleKickRemoval(result: Int32) {
        pendingRemovals -= 1
        // ENOENT (not armed yet) or EALREADY (completing right now): try again.
        if result < 0 && kickArmed && state != .running { disarmKick() }
        finishStopIfQuiet()
    }

    @inlinable
    final func handleKick(tag: UInt64, result: Int32, flags: UInt32) {
        guard tag & 0xFFFF == kickGeneration & 0xFFFF else { return }  // an old poll's last word
        if flags & IORING_CQE_F_MORE == 0 {
            kickArmed = false
            if state == .running { armKick() } else { finishStopIfQuiet() }
        }
        if result > 0 {
            _ = read(kickFD, &kickBuffer, 8)  // clear the eventfd (non-blocking)
        }
        if state == .running { processAvailable() }
    }

    // MARK: completions (IOCompletionHandler)

    @inlinable
    public final func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
        if tag >= VirtqueueServerTags.handlerLimit {
            if tag == VirtqueueServerTags.kickRemoval { return handleKickRemoval(result: result) }
            if tag & VirtqueueServerTags.kick != 0 { return handleKick(tag: tag, result: result, flags: flags) }
            return
        }
        guard let finished = onContext({ handler.complete(tag: tag, result: result, on: $0) }) else { return }
        finishRequest(slot: finished.slot, usedLength: finished.usedLength)
    }

    @inlinable
    public final func endOfBatch() {
        publishUsed()
        signalGuestIfNeeded()
        // Not processAvailable() here: its completions would schedule another end of batch
        // at once, and a driver that keeps the ring full would never let the thread go.
        if heldBack && state == .running { onThread { $0.scheduleNextTurn(handlerID) } }
        endBusyPeriodIfIdle()
        finishStopIfQuiet()
    }

    /// Continues taking requests where a pass stopped (see requestsPerPass) or slots ran out.
    @inlinable
    public final func nextTurn() {
        // A parked request (waiting for a span block) still starts while the queue stops.
        guard state == .running || parkedSlot >= 0 else { return }
        processAvailable()
    }

    /// Publishes the batch; with a dirty log, marks the used ring's changed bytes right
    /// after (used.idx is only in guest memory once stored: marking it earlier could let the
    /// frontend harvest the bit and copy the page before the store lands).
    @inlinable @inline(__always)
    final func publishUsed() {
        if let inflightRef {
            inflightRef._withUnsafeGuaranteedRef { ring.publishUsed(trackingIn: $0) }
        } else {
            ring.publishUsed()
        }
        if let bitmap = dirtyLog.bitmap { logPublishedUsed(in: bitmap) }
    }

    @inlinable @inline(never)
    final func logPublishedUsed(in bitmap: DirtyLogBitmap) {
        guard let address = dirtyLog.usedRingGuestAddress else { return }
        noteDirtyLogMisses(ring.logPublishedUsed(at: address, in: bitmap))
    }

    @inlinable @inline(__always)
    final func signalGuestIfNeeded() {
        guard usedSinceSignal else { return }
        usedSinceSignal = false
        if callFD >= 0 && ring.shouldNotifyGuest() {
            var one: UInt64 = 1
            _ = write(callFD, &one, 8)
        }
    }

    // MARK: polling (IOPoller)

    @inlinable
    public final func pollForWork() -> Bool {
        // While the backend is quiesced (drained, or its node inactive: a lock or migration
        // wait can last many seconds) requests stay in the ring until resumeAfterDrain; finding
        // them is no work, or the thread would spin on them at 100 % CPU for the whole wait.
        guard state == .running, slots.hasFree, parkedSlot < 0, !handler.isQuiescing else { return false }
        let waiting: UInt16
        do {
            waiting = try ring.availableCount()
        } catch {
            markBroken("\(error)")
            return false
        }
        guard waiting > 0 else { return false }
        processAvailable()
        return true
    }

    @inlinable
    public final var hasRequestsInFlight: Bool { queueInFlight > 0 }

    @inlinable
    public final func pollingBegins() {
        polling = true
        if state == .running { ring.disableGuestKicks() }
    }

    @inlinable
    public final func pollingEnds() -> Bool {
        polling = false
        guard state == .running else { return false }
        // Work that arrived while kicks were off would never be kicked for: take it now
        // (unless quiesced: resumeAfterDrain takes it, and the thread may sleep meanwhile).
        guard ring.enableGuestKicks(), !handler.isQuiescing else { return false }
        processAvailable()
        return true
    }
}
