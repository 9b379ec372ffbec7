import IOThreads
import VhostUser

/// Taking requests off the ring and giving them back.
extension VirtqueueServer {
    // MARK: admission

    /// Counts a request in. The queue is one user of the handler's backend from its first
    /// request until the end of the batch in which its last one finished: the atomic
    /// begin/end pair is paid once per busy period, not per request, and in between only
    /// the quiesce flag is read. A drain still waits for every request: the backend's count
    /// stays above zero until the queue lets go (endBusyPeriodIfIdle).
    @inlinable @inline(__always)
    final func admitRequest() -> Bool {
        if !inBusyPeriod {
            guard handler.beginBusyPeriod() else { return false }
            inBusyPeriod = true
        } else if handler.isQuiescing {
            endBusyPeriodIfIdle()
            return false
        }
        queueInFlight += 1
        return true
    }

    /// Counts a request out (after its completion is on the used ring, or it was not taken).
    @inlinable @inline(__always)
    final func retireRequest() {
        precondition(queueInFlight > 0, "virtqueue \(index): request retired twice")
        queueInFlight -= 1
        if queueInFlight == 0 { onThread { $0.scheduleEndOfBatch(handlerID) } }
    }

    @inlinable @inline(__always)
    final func endBusyPeriodIfIdle() {
        guard inBusyPeriod, queueInFlight == 0 else { return }
        inBusyPeriod = false
        handler.endBusyPeriod()
    }

    // MARK: taking requests

    @inlinable
    final func processAvailable() {
        heldBack = false
        if parkedSlot >= 0 && !startParkedRequest() {
            heldBack = true  // still no span block: the pool wakes us (nextTurn) when one is back
            return
        }
        var taken = 0
        while state == .running {
            ring.disableGuestKicks()
            while slots.hasFree {
                if taken == Self.requestsPerPass {
                    // Let the first ones start, complete and be published (and the driver be
                    // told) before taking more: the driver refills while the rest are served.
                    // Guest kicks stay off; the thread's next turn comes back here.
                    onThread { $0.scheduleNextTurn(handlerID) }
                    return
                }
                guard admitRequest() else {
                    heldBack = true  // quiesced: resumeAfterDrain brings us back
                    _ = ring.enableGuestKicks()
                    return
                }
                // A layout that walks while taking (packed) walks the request straight into
                // the slot it will get; split takes the head, then walks into its slot.
                let oneWalk = Ring.walksWhileTaking
                let slot = oneWalk ? slots.nextFree : 0
                let head: UInt16?
                do {
                    head = oneWalk ? try takeRequestBorrowingIfLong(into: slot) : try takeHead()
                } catch {
                    retireRequest()
                    markBroken("\(error)")
                    return
                }
                guard let head else {
                    retireRequest()
                    if parkedSlot >= 0 {
                        heldBack = true  // a long buffer waits in the ring for a span block
                        return
                    }
                    break
                }
                if oneWalk {
                    startRequest(slot: slots.take(head: head), head: head)
                } else {
                    startRequest(head: head)
                    if parkedSlot >= 0 {
                        heldBack = true  // its chain waits for a span block: take nothing after it
                        return
                    }
                }
                taken += 1
            }
            if !slots.hasFree {
                heldBack = true  // a completion frees a slot and endOfBatch comes back here
                _ = ring.enableGuestKicks()
                return
            }
            // Ring empty. While the thread polls, it will look again itself; otherwise
            // re-enable kicks, then look once more (the classic race).
            if polling { return }
            if !ring.enableGuestKicks() { return }
        }
    }

    /// The next head: with an inflight region, requests a previous process left in flight
    /// come first and taken heads are marked there.
    @inlinable @inline(__always)
    final func takeHead() throws(VirtqueueError) -> UInt16? {
        guard let inflightRef else { return try ring.popAvailable() }
        let taken: Result<UInt16?, VirtqueueError> = inflightRef._withUnsafeGuaranteedRef { region in
            do throws(VirtqueueError) {
                return .success(try ring.popAvailable(trackingIn: region))
            } catch {
                return .failure(error)
            }
        }
        return try taken.get()
    }

    /// Takes a slot for the request at `head`, walks its chain into it and has the handler
    /// start it.
    @inlinable
    final func startRequest(head: UInt16) {
        startRequest(inSlot: slots.take(head: head), head: head)
    }

    /// Walks the chain at `head` into `slot` (a long chain borrows a span block, or parks the
    /// slot until one is back) and has the handler start it.
    @inlinable
    final func startRequest(inSlot slot: Int, head: UInt16) {
        let started = slots.withChain(slot) { chain -> VirtqueueRequestStart<Handler.Unanswerable>? in
            do throws(VirtqueueError) {
                try ring.readChain(head: head, into: chain)
            } catch {
                if case .tooManySpans = error, longChainSpans > 0, chain.attachedStorage == nil {
                    guard readLongChain(slot: slot, head: head, into: chain) else { return nil }
                } else {
                    corruptChain(slot: slot, head: head, error)
                    return nil
                }
            }
            return onContext { handler.start(slot: slot, chain: chain, on: $0) }
        }
        handleStart(started, slot: slot)
    }

    @usableFromInline
    final func corruptChain(slot: Int, head: UInt16, _ error: VirtqueueError) {
        freeSlot(slot)
        retireRequest()
        markBroken("descriptor chain at head \(head): \(error)")
    }

    /// Takes the next request off the ring and walks it into `slot`'s chain (the slot is
    /// still free: taken only once there is a request). With an inflight region, requests a
    /// previous process left in flight come first and taken heads are marked there.
    @inlinable @inline(__always)
    final func takeRequest(into slot: Int) throws(VirtqueueError) -> UInt16? {
        if let inflightRef { return try takeTrackedRequest(into: slot, region: inflightRef) }
        // An empty ring is seen inline (one flags load on a packed ring), without calling
        // the walk: at QD 1 every other take finds the ring empty. The walk gets the flags
        // read here, not a second read of them (bench/results/2026-12-07-packed-cost-2.md).
        // The chain is lent by a one-call closure that the optimizer inlines.
        guard let headFlags = try ring.availableHeadFlags() else { return nil }
        let taken: Result<UInt16?, VirtqueueError> = slots.withChain(slot) { chain in
            do throws(VirtqueueError) {
                return .success(try ring.takeAvailable(into: chain, headFlags: headFlags))
            } catch {
                return .failure(error)
            }
        }
        return try taken.get()
    }

    /// `takeRequest(into:)` with the inflight region kept up to date (its resubmissions
    /// come before the ring). Out of line: its walk through the region would make the
    /// common path's closure too big to inline.
    @inlinable @inline(never)
    final func takeTrackedRequest(into slot: Int, region inflightRef: Unmanaged<Ring.InflightRegion>) throws(VirtqueueError) -> UInt16? {
        let taken: Result<UInt16?, VirtqueueError> = slots.withChain(slot) { chain in
            inflightRef._withUnsafeGuaranteedRef { region in
                do throws(VirtqueueError) {
                    return .success(try ring.takeAvailable(into: chain, trackingIn: region))
                } catch {
                    return .failure(error)
                }
            }
        }
        return try taken.get()
    }

    /// `takeRequest(into:)`, with a buffer too long for the slot's own spans taken again
    /// into a borrowed span block (the failed walk left it in the ring).
    @inlinable @inline(__always)
    final func takeRequestBorrowingIfLong(into slot: Int) throws(VirtqueueError) -> UInt16? {
        do {
            return try takeRequest(into: slot)
        } catch {
            guard case .tooManySpans = error, longChainSpans > 0 else { throw error }
            return try takeLongRequest(into: slot)
        }
    }

    /// Has the handler start the request walked into `slot`. Forced inline (into
    /// processAvailable), with `finish` inline in it (`finishesInline`).
    @inlinable @inline(__always)
    final func startRequest(slot: Int, head: UInt16) {
        let started = slots.withChain(slot) { chain -> VirtqueueRequestStart<Handler.Unanswerable>? in
            onContext { handler.start(slot: slot, chain: chain, on: $0) }
        }
        handleStart(started, slot: slot)
    }

    /// What the handler's start says: running, done at once, or impossible to answer.
    @inlinable @inline(__always)
    final func handleStart(_ started: VirtqueueRequestStart<Handler.Unanswerable>?, slot: Int) {
        switch started {
        case nil: return
        case .started?: return
        case .finished(let usedLength)?: finishRequest(slot: slot, usedLength: usedLength)
        case .unanswerable(let why)?:
            // Nowhere to write a status: the request can never be completed correctly.
            handler.release(slot: slot)
            freeSlot(slot)
            retireRequest()
            markBroken("\(why)")
        }
    }

    /// Frees a slot, giving back the span block its chain borrowed, if any.
    @inlinable @inline(__always)
    final func freeSlot(_ slot: Int) {
        if slotsWithSpanBlocks > 0 { returnSpanBlock(slot) }
        slots.release(slot)
    }

    /// Puts the request in `slot` on the used ring and frees the slot. A slot that is not
    /// in use (a late or repeated completion) is ignored: each request completes once.
    @inlinable
    final func finish(slot: Int, usedLength: UInt32) {
        finishInline(slot: slot, usedLength: usedLength)
    }

    /// Whether the server forces `finish` inline where requests finish (the handler's
    /// start, a completion). The packed ring's longer used-descriptor write keeps its `finish`
    /// from being inlined on its own, and the call cost ~20 instructions per request; split's
    /// is inlined where it pays and forcing it everywhere pushed split's start out of line
    /// (bench/results/2026-12-06-packed-cost.md, 2026-12-07-packed-cost-2.md). The layout
    /// that walks while taking is the packed one; a constant, folded by specialisation.
    @inlinable @inline(__always)
    static var finishesInline: Bool { Ring.walksWhileTaking }

    /// Where a request finishes (the handler's start, a completion): `finishInline` for a
    /// layout that needs it forced (`finishesInline`), else `finish`.
    @inlinable @inline(__always)
    final func finishRequest(slot: Int, usedLength: UInt32) {
        if Self.finishesInline {
            finishInline(slot: slot, usedLength: usedLength)
        } else {
            finish(slot: slot, usedLength: usedLength)
        }
    }

    /// `finish`, forced inline.
    @inlinable @inline(__always)
    final func finishInline(slot: Int, usedLength: UInt32) {
        guard let head = slots.head(slot) else { return }
        markGuestWritesDirty(slot: slot, usedLength: usedLength)
        ring.addUsed(head: head, writtenLength: usedLength)
        handler.release(slot: slot)
        freeSlot(slot)
        retireRequest()
        usedSinceSignal = true
        onThread { $0.scheduleEndOfBatch(handlerID) }
    }

    /// The one place where the device's writes to guest memory are final for a request (its
    /// data and status are in guest memory; the used element is not published yet): with a
    /// dirty log, mark every page of the chain's writable buffers. Logging off costs a load
    /// and a branch per completion.
    @inlinable @inline(__always)
    final func markGuestWritesDirty(slot: Int, usedLength: UInt32) {
        guard let bitmap = dirtyLog.bitmap else { return }
        markChainDirty(slot: slot, in: bitmap)
    }

    /// Kept out of line (still specialised): inlined, it made `finish` too big to be inlined
    /// itself, which cost the unlogged path ~35 instructions per request.
    @inlinable @inline(never)
    final func markChainDirty(slot: Int, in bitmap: DirtyLogBitmap) {
        let missed = slots.withChain(slot) { ring.logWritableBuffers(of: $0, in: bitmap) }
        if missed > 0 { noteDirtyLogMisses(missed) }
    }

    /// Pages written outside the log: the frontend's log is smaller than guest memory. They
    /// cannot be marked (the log is never written out of bounds); the first time, the
    /// operator hears of it: the migration may then copy stale pages.
    @usableFromInline
    final func noteDirtyLogMisses(_ pages: UInt64) {
        guard pages > 0 else { return }
        if dirtyLogMissedPages == 0 {
            logger.warning("queue \(index): the device wrote \(pages) guest page(s) beyond the frontend's dirty log (\(dirtyLog.bitmap?.coveredBytes ?? 0) bytes of guest memory covered); they are not marked, so a live migration may copy stale data; check the frontend's memory layout")
        }
        dirtyLogMissedPages &+= pages
    }
}
