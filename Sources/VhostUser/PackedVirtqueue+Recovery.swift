import CSpindle

/// A packed ring taking over what a previous backend process left in flight (read back from
/// the inflight region by `PackedInflightTracker`).
extension PackedVirtqueue {
    /// One descriptor as the driver wrote it into the ring, copied into the inflight region.
    public struct DescriptorCopy: Sendable, Hashable {
        public var address: UInt64
        public var length: UInt32
        public var id: UInt16
        public var flags: UInt16
        public init(address: UInt64, length: UInt32, id: UInt16, flags: UInt16) {
            self.address = address
            self.length = length
            self.id = id
            self.flags = flags
        }
    }

    /// The flags of the ring descriptor at `position` (< size), as the driver or device last
    /// wrote them.
    func descriptorFlags(at position: UInt16) -> UInt16 {
        UInt16(littleEndian: spindle_load_acquire_u16(descriptors + 16 * Int(position) + 14))
    }

    /// Restarts the ring after a previous process died: used descriptors continue at
    /// `usedPosition`/`usedWrap`; `chains` (buffer id and descriptors, in the order they will
    /// be resubmitted) are in flight again, walked from their copies; the device takes new
    /// buffers from the ring just after the slots they occupy, whose flags it resets to "not
    /// used". False (nothing changed) if the chains cannot be in flight together on this ring.
    mutating func restore(usedPosition: UInt16, usedWrap: Bool,
                          chains: [(id: UInt16, descriptors: [DescriptorCopy])]) -> Bool {
        guard usedPosition < size, popped == 0, !batchPending else { return false }
        var slots = 0
        var seen = Set<UInt16>()
        for chain in chains {
            guard chain.id < size, seen.insert(chain.id).inserted, !chain.descriptors.isEmpty else { return false }
            slots += chain.descriptors.count
        }
        guard slots <= Int(size) else { return false }
        let copies = PackedRecoveredChains(size: Int(size))
        var offset = 0
        for chain in chains {
            for (k, d) in chain.descriptors.enumerated() {
                let target = copies.descriptors + 16 * (offset + k)
                target.storeBytes(of: d.address.littleEndian, as: UInt64.self)
                target.storeBytes(of: d.length.littleEndian, toByteOffset: 8, as: UInt32.self)
                target.storeBytes(of: d.id.littleEndian, toByteOffset: 12, as: UInt16.self)
                target.storeBytes(of: d.flags.littleEndian, toByteOffset: 14, as: UInt16.self)
            }
            copies.start[Int(chain.id)] = UInt32(offset) + 1
            // The position part only matters for the ring walk, which a copy replaces.
            buffers[Int(chain.id)] = UInt32(chain.descriptors.count) << 16
            offset += chain.descriptors.count
        }
        if !chains.isEmpty {
            recovered = copies
            recoveredStart = copies.start
            recoveredDescriptors = UnsafeRawPointer(copies.descriptors)
        }
        self.usedPosition = usedPosition
        self.usedWrap = usedWrap
        publishedPosition = usedPosition
        publishedWrap = usedWrap
        loggedPosition = usedPosition
        // The slots the buffers occupy belong to the device. The dead process may have left
        // used descriptors there that it never published (a batch's later ones carry their
        // flags before the first one's are stored): once the used position reaches them the
        // driver would take them for new ones, a buffer completed twice. Mark them unused.
        var position = usedPosition
        var wrap = usedWrap
        for _ in 0..<slots {
            let flags = descriptors + 16 * Int(position) + 14
            spindle_store_release_u16(flags, PackedVirtqueueLayout.availableFlags(wrap: wrap).littleEndian)
            position = advanced(position, &wrap)
        }
        availPosition = position
        availWrap = wrap
        popped = chains.count
        return true
    }
}

/// Descriptor copies of the chains being resubmitted, each walked once (the id may come back
/// later as a new buffer, read from the ring again: the walk clears its mark).
final class PackedRecoveredChains: @unchecked Sendable {
    let descriptors: UnsafeMutableRawPointer
    /// Per buffer id: where its copy starts, plus one (0: none).
    let start: UnsafeMutablePointer<UInt32>

    init(size: Int) {
        descriptors = .allocate(byteCount: 16 * size, alignment: 16)
        descriptors.initializeMemory(as: UInt8.self, repeating: 0, count: 16 * size)
        start = .allocate(capacity: size)
        start.initialize(repeating: 0, count: size)
    }

    deinit {
        descriptors.deallocate()
        start.deallocate()
    }
}
