import VhostUser

/// Zeroed ring memory for tests of a driver-side ring (the frontend library's
/// `DriverVirtqueue`): the mirror of `MockSplitQueue`, the test plays the device by
/// reading the available ring and writing the used ring directly.
public final class RingTestMemory {
    public let size: Int
    public let descriptors: UnsafeMutableRawPointer
    public let available: UnsafeMutableRawPointer
    public let used: UnsafeMutableRawPointer

    public init(size: Int) {
        self.size = size
        descriptors = .allocate(byteCount: VirtqueueLayout.descriptorTableBytes(size: size), alignment: 16)
        available = .allocate(byteCount: VirtqueueLayout.availableRingBytes(size: size), alignment: 2)
        used = .allocate(byteCount: VirtqueueLayout.usedRingBytes(size: size), alignment: 4)
        descriptors.initializeMemory(as: UInt8.self, repeating: 0, count: VirtqueueLayout.descriptorTableBytes(size: size))
        available.initializeMemory(as: UInt8.self, repeating: 0, count: VirtqueueLayout.availableRingBytes(size: size))
        used.initializeMemory(as: UInt8.self, repeating: 0, count: VirtqueueLayout.usedRingBytes(size: size))
    }

    deinit {
        descriptors.deallocate()
        available.deallocate()
        used.deallocate()
    }

    // Driver-written fields, as the device would read them.
    public var availFlags: UInt16 { available.load(as: UInt16.self) }
    public var availIdx: UInt16 { available.load(fromByteOffset: 2, as: UInt16.self) }
    public func availEntry(_ i: Int) -> UInt16 { available.load(fromByteOffset: 4 + 2 * i, as: UInt16.self) }
    public var usedEvent: UInt16 { available.load(fromByteOffset: 4 + 2 * size, as: UInt16.self) }

    // Device-written fields.
    public func setUsedFlags(_ flags: UInt16) { used.storeBytes(of: flags, as: UInt16.self) }
    public func setAvailEvent(_ value: UInt16) { used.storeBytes(of: value, toByteOffset: 4 + 8 * size, as: UInt16.self) }
    public func setUsedIdx(_ value: UInt16) { used.storeBytes(of: value, toByteOffset: 2, as: UInt16.self) }
    public func setUsedEntry(_ i: Int, id: UInt32, length: UInt32) {
        used.storeBytes(of: id, toByteOffset: 4 + 8 * i, as: UInt32.self)
        used.storeBytes(of: length, toByteOffset: 8 + 8 * i, as: UInt32.self)
    }

    /// Descriptor `i` of `table` as (address, length, flags, next).
    public static func descriptor(_ table: UnsafeRawPointer, _ i: Int) -> (UInt64, UInt32, UInt16, UInt16) {
        let entry = table + 16 * i
        return (entry.load(as: UInt64.self), entry.load(fromByteOffset: 8, as: UInt32.self),
                entry.load(fromByteOffset: 12, as: UInt16.self), entry.load(fromByteOffset: 14, as: UInt16.self))
    }
}
