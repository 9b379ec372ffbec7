import VhostUser
@testable import VhostUserFrontend

/// Zeroed ring memory for driver-side ring tests; the test plays the device by writing
/// the used ring directly.
final class RingTestMemory {
    let size: Int
    let descriptors: UnsafeMutableRawPointer
    let available: UnsafeMutableRawPointer
    let used: UnsafeMutableRawPointer

    init(size: Int) {
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

    func ring(eventIndex: Bool) -> DriverVirtqueue {
        DriverVirtqueue(size: size, descriptors: descriptors, available: available, used: used, eventIndex: eventIndex)
    }

    // Driver-written fields, as the device would read them.
    var availFlags: UInt16 { available.load(as: UInt16.self) }
    var availIdx: UInt16 { available.load(fromByteOffset: 2, as: UInt16.self) }
    func availEntry(_ i: Int) -> UInt16 { available.load(fromByteOffset: 4 + 2 * i, as: UInt16.self) }
    var usedEvent: UInt16 { available.load(fromByteOffset: 4 + 2 * size, as: UInt16.self) }

    // Device-written fields.
    func setUsedFlags(_ flags: UInt16) { used.storeBytes(of: flags, as: UInt16.self) }
    func setAvailEvent(_ value: UInt16) { used.storeBytes(of: value, toByteOffset: 4 + 8 * size, as: UInt16.self) }
    func setUsedIdx(_ value: UInt16) { used.storeBytes(of: value, toByteOffset: 2, as: UInt16.self) }
    func setUsedEntry(_ i: Int, id: UInt32, length: UInt32) {
        used.storeBytes(of: id, toByteOffset: 4 + 8 * i, as: UInt32.self)
        used.storeBytes(of: length, toByteOffset: 8 + 8 * i, as: UInt32.self)
    }

    /// Descriptor `i` of `table` as (address, length, flags, next).
    static func descriptor(_ table: UnsafeRawPointer, _ i: Int) -> (UInt64, UInt32, UInt16, UInt16) {
        let entry = table + 16 * i
        return (entry.load(as: UInt64.self), entry.load(fromByteOffset: 8, as: UInt32.self),
                entry.load(fromByteOffset: 12, as: UInt16.self), entry.load(fromByteOffset: 14, as: UInt16.self))
    }
}
