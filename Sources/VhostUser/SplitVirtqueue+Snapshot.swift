import CSpindle

/// The split ring's indices as they stand in guest memory, for the logs at a ring's start and
/// stop: after a migration they tell whether the driver had requests the device never took
/// (avail.idx ahead of the device's index), completions it never looked at (used_event behind
/// used.idx, interrupts on) or whether it was told not to kick (avail_event).
public struct SplitRingSnapshot: Sendable, Equatable, CustomStringConvertible {
    public var availableFlags: UInt16
    public var availableIndex: UInt16
    /// The driver's used_event (meaningful with EVENT_IDX).
    public var usedEvent: UInt16
    public var usedFlags: UInt16
    public var usedIndex: UInt16
    /// The device's avail_event (meaningful with EVENT_IDX).
    public var availableEvent: UInt16

    public var description: String {
        "avail.flags \(availableFlags) avail.idx \(availableIndex) used_event \(usedEvent) " +
            "used.flags \(usedFlags) used.idx \(usedIndex) avail_event \(availableEvent)"
    }
}

extension SplitVirtqueue {
    /// Reads the six fields (acquire loads; the guest may change them meanwhile). Control
    /// thread only, at a ring's start or stop: never on the hot path.
    public var snapshot: SplitRingSnapshot {
        let n = Int(size)
        return SplitRingSnapshot(availableFlags: UInt16(littleEndian: spindle_load_acquire_u16(available)),
                                 availableIndex: UInt16(littleEndian: spindle_load_acquire_u16(available + 2)),
                                 usedEvent: UInt16(littleEndian: spindle_load_acquire_u16(available + 4 + 2 * n)),
                                 usedFlags: UInt16(littleEndian: spindle_load_acquire_u16(used)),
                                 usedIndex: UInt16(littleEndian: spindle_load_acquire_u16(used + 2)),
                                 availableEvent: UInt16(littleEndian: spindle_load_acquire_u16(used + 4 + 8 * n)))
    }
}
