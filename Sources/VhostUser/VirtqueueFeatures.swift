/// The negotiated transport features that change how a split virtqueue behaves.
public struct VirtqueueFeatures: OptionSet, Sendable, Hashable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// VIRTIO_F_RING_INDIRECT_DESC (bit 28).
    public static let indirectDescriptors = VirtqueueFeatures(rawValue: 1 << 0)
    /// VIRTIO_F_RING_EVENT_IDX (bit 29).
    public static let eventIndex = VirtqueueFeatures(rawValue: 1 << 1)
    /// VIRTIO_F_NOTIFY_ON_EMPTY (bit 24).
    public static let notifyOnEmpty = VirtqueueFeatures(rawValue: 1 << 2)

    public static let indirectDescriptorsBit: UInt64 = 28
    public static let eventIndexBit: UInt64 = 29
    public static let notifyOnEmptyBit: UInt64 = 24

    /// Picks the ring features out of a negotiated virtio feature mask.
    public init(negotiated features: UInt64) {
        var result: VirtqueueFeatures = []
        if features & (1 << Self.indirectDescriptorsBit) != 0 { result.insert(.indirectDescriptors) }
        if features & (1 << Self.eventIndexBit) != 0 { result.insert(.eventIndex) }
        if features & (1 << Self.notifyOnEmptyBit) != 0 { result.insert(.notifyOnEmpty) }
        self = result
    }
}
