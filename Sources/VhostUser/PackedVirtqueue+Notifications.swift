import CSpindle

/// Event suppression: the driver area (read here) says when the driver wants interrupts,
/// the device area (written here) says when the device wants kicks. Each is
/// { off_wrap u16 @0, flags u16 @2 }; flags ENABLE, DISABLE, or DESC (EVENT_IDX only): an
/// event at one ring position in one lap (off_wrap: position, wrap counter in bit 15).
extension PackedVirtqueue {
    /// Whether the driver asked (DESC) to hear of the used descriptor at `offWrap`, given
    /// that the device's used position moved `advanced` slots up to `newPosition` under
    /// `newWrap`. An event in the other lap is taken to be in the previous one (its position
    /// minus the ring size); then it is virtio's vring_need_event over [old, new).
    @inlinable
    public static func needsEvent(offWrap: UInt16, newPosition: UInt16, newWrap: Bool,
                                  advanced: UInt32, size: UInt16) -> Bool {
        if advanced >= UInt32(size) { return true }  // a whole lap passed the event
        // event = position - (other lap ? size : 0), folded into the distance; no branch on
        // `advanced == 0`: nothing is below 0.
        let otherLap = (offWrap ^ (newWrap ? PackedVirtqueueLayout.eventWrapBit : 0)) & PackedVirtqueueLayout.eventWrapBit
        let distance = newPosition &- (offWrap & ~PackedVirtqueueLayout.eventWrapBit) &+ (otherLap != 0 ? size : 0) &- 1
        return distance < UInt16(truncatingIfNeeded: advanced)
    }

    /// Decides whether to interrupt the driver for everything published since the previous
    /// decision (the caller then signals the call eventfd). Honours NOTIFY_ON_EMPTY. The first
    /// decision after setup always says yes.
    @inlinable
    public mutating func shouldNotifyGuest() -> Bool {
        // Orders the used descriptors' flags before reading the driver's suppression fields.
        spindle_fence_seq_cst()
        let wasValid = signalledValid
        let advanced = publishedSlots &- signalledSlots
        signalledValid = true
        signalledSlots = publishedSlots
        if features.contains(.notifyOnEmpty) && popped == 0 && !nextDescriptorLooksAvailable() { return true }
        if !wasValid { return true }
        // off_wrap (low half) and flags (high half) in one load: the area is 4-byte aligned.
        let area = UInt32(littleEndian: spindle_load_relaxed_u32(driverArea))
        switch UInt16(truncatingIfNeeded: area >> 16) & 3 {
        case PackedVirtqueueLayout.eventFlagsDisable:
            return false
        case PackedVirtqueueLayout.eventFlagsDescriptor where features.contains(.eventIndex):
            return Self.needsEvent(offWrap: UInt16(truncatingIfNeeded: area), newPosition: publishedPosition,
                                   newWrap: publishedWrap, advanced: advanced, size: size)
        default:
            return true  // ENABLE (and values the driver may not use: err towards an interrupt)
        }
    }

    /// The head at the device's position has AVAIL at the driver's wrap counter: available,
    /// or the hostile AVAIL == USED pattern, which `popAvailable` then reports.
    @inlinable
    func nextDescriptorLooksAvailable() -> Bool {
        let flags = UInt16(littleEndian: spindle_load_acquire_u16(descriptors + 16 * Int(availPosition) + 14))
        return (flags & PackedVirtqueueLayout.descriptorFlagAvailable != 0) == availWrap
    }

    @inlinable @inline(__always)
    mutating func setDeviceEventFlags(_ flags: UInt16) {
        guard deviceEventFlags != flags else { return }
        deviceEventFlags = flags
        spindle_store_relaxed_u16(deviceArea + 2, flags.littleEndian)
    }

    /// Asks the driver not to kick while the device is polling the ring anyway.
    @inlinable
    public mutating func disableGuestKicks() {
        setDeviceEventFlags(PackedVirtqueueLayout.eventFlagsDisable)
    }

    /// Asks for kicks again (with EVENT_IDX: for the descriptor at the device's position),
    /// then checks for work that arrived meanwhile; true if there is some (the caller keeps
    /// processing instead of sleeping).
    @inlinable
    public mutating func enableGuestKicks() -> Bool {
        if features.contains(.eventIndex) {
            // off_wrap (position, wrap counter in bit 15) and DESC in one 32-bit store: the
            // area is 4-byte aligned, off_wrap its low half.
            let offWrap = UInt32(availPosition & 0x7fff) | (availWrap ? 0x8000 : 0)
            let flags = PackedVirtqueueLayout.eventFlagsDescriptor
            spindle_store_relaxed_u32(deviceArea, (offWrap | UInt32(flags) << 16).littleEndian)
            deviceEventFlags = flags
        } else {
            setDeviceEventFlags(PackedVirtqueueLayout.eventFlagsEnable)
        }
        // Order the stores above before re-reading the ring; pairs with the driver's barrier
        // between making a descriptor available and reading our suppression fields.
        spindle_fence_seq_cst()
        return nextDescriptorLooksAvailable()
    }
}
