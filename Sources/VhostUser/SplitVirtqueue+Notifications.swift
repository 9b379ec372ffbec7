import CSpindle

/// Interrupt suppression (device → driver) and kick suppression (driver → device).
extension SplitVirtqueue {
    /// virtio's vring_need_event: true if `eventIndex` lies in the window [old, new) of used
    /// (or avail) indices just published, in wrapping u16 arithmetic.
    @inlinable
    public static func needsEvent(eventIndex: UInt16, newIndex: UInt16, oldIndex: UInt16) -> Bool {
        (newIndex &- eventIndex &- 1) < (newIndex &- oldIndex)
    }

    /// The driver's used_event (EVENT_IDX): interrupt it once used.idx passes this.
    @inlinable
    public var usedEvent: UInt16 {
        UInt16(littleEndian: spindle_load_relaxed_u16(available + 4 + 2 * Int(size)))
    }

    /// Whether publishing used entries from `oldUsedIndex` up to `newUsedIndex` requires an
    /// interrupt: with EVENT_IDX by the driver's used_event, otherwise by the avail ring's
    /// NO_INTERRUPT flag. Call after `publishUsed()`; issues the full fence that orders
    /// the used.idx store before reading the driver's suppression fields.
    @inlinable
    public func needsNotification(oldUsedIndex: UInt16, newUsedIndex: UInt16) -> Bool {
        spindle_fence_seq_cst()
        return driverWantsInterrupt(oldUsedIndex: oldUsedIndex, newUsedIndex: newUsedIndex)
    }

    /// `needsNotification` without the fence.
    @inlinable
    func driverWantsInterrupt(oldUsedIndex: UInt16, newUsedIndex: UInt16) -> Bool {
        if features.contains(.eventIndex) {
            return Self.needsEvent(eventIndex: usedEvent, newIndex: newUsedIndex, oldIndex: oldUsedIndex)
        }
        let flags = UInt16(littleEndian: spindle_load_relaxed_u16(available))
        return flags & VirtqueueLayout.availableFlagNoInterrupt == 0
    }

    /// Decides whether to interrupt the driver for everything published since the previous
    /// decision (the caller then signals the call eventfd). Honours NOTIFY_ON_EMPTY.
    /// The first decision after setup or SET_VRING_BASE always says yes.
    @inlinable
    public mutating func shouldNotifyGuest() -> Bool {
        spindle_fence_seq_cst()
        let wasValid = signalledValid
        let old = signalledUsed
        signalledValid = true
        signalledUsed = publishedUsed
        if features.contains(.notifyOnEmpty) && popped == 0
            && UInt16(littleEndian: spindle_load_acquire_u16(available + 2)) == lastAvail {
            return true
        }
        if !wasValid { return true }
        return driverWantsInterrupt(oldUsedIndex: old, newUsedIndex: publishedUsed)
    }

    /// Writes avail_event (EVENT_IDX): the driver kicks once avail.idx passes this.
    @inlinable
    public func setAvailableEvent(_ index: UInt16) {
        spindle_store_relaxed_u16(used + 4 + 8 * Int(size), index.littleEndian)
    }

    /// Asks the driver not to kick while the device is polling the queue anyway. With
    /// EVENT_IDX, avail_event goes one behind what we consumed: the driver kicks only when it
    /// adds the entry *at* avail_event, which it then never does while we keep up.
    @inlinable
    public mutating func disableGuestKicks() {
        if features.contains(.eventIndex) {
            setAvailableEvent(lastAvail &- 1)
        } else {
            usedFlags |= VirtqueueLayout.usedFlagNoNotify
            spindle_store_relaxed_u16(used, usedFlags.littleEndian)
        }
    }

    /// Re-enables kicks, then checks for work that arrived while they were off (the driver
    /// may have skipped its kick for it). Returns true if there is such work: the caller must
    /// keep processing instead of going to sleep.
    @inlinable
    public mutating func enableGuestKicks() -> Bool {
        if features.contains(.eventIndex) {
            setAvailableEvent(lastAvail)
        } else {
            usedFlags &= ~VirtqueueLayout.usedFlagNoNotify
            spindle_store_relaxed_u16(used, usedFlags.littleEndian)
        }
        // Order the store above before re-reading avail.idx; pairs with the driver's barrier
        // between writing avail.idx and reading our suppression fields.
        spindle_fence_seq_cst()
        return UInt16(littleEndian: spindle_load_acquire_u16(available + 2)) != lastAvail
    }
}
