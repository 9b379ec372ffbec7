import VhostUser

/// Where one queue's rings, request slots and data buffers go in shared memory.
///
/// Each ring starts on its own page (so the driver-written avail ring and the
/// device-written used ring never share a cache line). Request slots are 128 bytes:
/// the 16-byte request header at 0, the status byte at 16, and the slot's indirect
/// descriptor table (3 × 16 bytes) at 64. Data buffers are page-aligned.
public struct QueueMemoryLayout: Sendable, Hashable {
    public static let slotStride = 128
    public static let statusOffset = 16
    public static let indirectTableOffset = 64
    public static let pageSize = 4096

    public let queueSize: Int
    public let slotCount: Int
    public let dataStride: Int

    public init(queueSize: Int, slotCount: Int, maxRequestBytes: Int) {
        self.queueSize = queueSize
        self.slotCount = slotCount
        self.dataStride = Self.roundUp(maxRequestBytes, Self.pageSize)
    }

    /// Bytes one queue needs, including alignment padding.
    public var totalBytes: Int {
        Self.roundUp(VirtqueueLayout.descriptorTableBytes(size: queueSize), Self.pageSize)
            + Self.roundUp(VirtqueueLayout.availableRingBytes(size: queueSize), Self.pageSize)
            + Self.roundUp(VirtqueueLayout.usedRingBytes(size: queueSize), Self.pageSize)
            + Self.roundUp(slotCount * Self.slotStride, Self.pageSize)
            + slotCount * dataStride
    }

    static func roundUp(_ value: Int, _ alignment: Int) -> Int {
        (value + alignment - 1) / alignment * alignment
    }
}
