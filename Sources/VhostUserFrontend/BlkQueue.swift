import CSpindle
import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// One virtio-blk queue as the driver drives it: the split ring, the preallocated request
/// slots (header, data buffer, status byte, optional indirect table) in shared memory and
/// the queue's kick and call eventfds.
///
/// Slot `s` always uses the same descriptors: ring descriptors 3s, 3s+1, 3s+2 (header,
/// data, status) or, with indirect descriptors, ring descriptor `s` pointing at the slot's
/// own 3-entry table. Everything is written once at setup; a request only changes the
/// header, the data length and direction, and the status byte. A plain value owned by one
/// thread; no allocation on any path here.
///
/// With a packed ring (`packedRing` set) slot `s` is buffer id `s`, and each submission
/// writes its chain (from the slot's descriptor images, or one INDIRECT descriptor) at the
/// ring's next position; see
/// BlkQueue+Packed.swift. The layout-neutral calls (`pendingCompletions`, `takeCompletion`,
/// `requestCallOnNextCompletion`, `suppressCalls`) serve both layouts.
public struct BlkQueue: @unchecked Sendable {
    public let index: Int
    /// The split ring. For a packed queue only its three addresses mean anything (descriptor
    /// ring, driver area, device area: what SET_VRING_ADDR carries); use `packedRing`.
    public var ring: DriverVirtqueue
    /// The packed ring, for a queue set up with `RingLayout.packed`.
    public var packedRing: PackedDriverVirtqueue?
    public let isPacked: Bool
    public let slotCount: Int
    public let indirect: Bool
    public let maxRequestBytes: Int
    public let kickFD: Int32
    public let callFD: Int32
    @usableFromInline let slots: UnsafeMutableRawPointer
    @usableFromInline let data: UnsafeMutableRawPointer
    @usableFromInline let dataStride: Int
    /// Guest-physical addresses of `slots` and `data` (a packed ring writes them per request).
    @usableFromInline let slotAddressBase: UInt64
    @usableFromInline let dataAddressBase: UInt64

    /// Carves the queue out of `memory` and writes every slot's descriptors.
    init(index: Int, layout: QueueMemoryLayout, memory: SharedMemoryRegion, eventIndex: Bool, indirect: Bool,
         maxRequestBytes: Int, kickFD: Int32, callFD: Int32, ringLayout: RingLayout = .split) throws(FrontendError) {
        let page = QueueMemoryLayout.pageSize
        let n = layout.queueSize
        let descriptors = try memory.allocate(VirtqueueLayout.descriptorTableBytes(size: n), alignment: page)
        let available = try memory.allocate(VirtqueueLayout.availableRingBytes(size: n), alignment: page)
        let used = try memory.allocate(VirtqueueLayout.usedRingBytes(size: n), alignment: page)
        slots = try memory.allocate(layout.slotCount * QueueMemoryLayout.slotStride, alignment: page)
        data = try memory.allocate(layout.slotCount * layout.dataStride, alignment: page)
        isPacked = ringLayout == .packed
        if isPacked {
            // The avail and used pages hold the driver and device areas (4 bytes each).
            ring = DriverVirtqueue(size: 1, descriptors: descriptors, available: available, used: used, eventIndex: eventIndex)
            packedRing = PackedDriverVirtqueue(size: n, descriptors: descriptors, driverArea: available, deviceArea: used,
                                               eventIndex: eventIndex, idCount: layout.slotCount)
        } else {
            ring = DriverVirtqueue(size: n, descriptors: descriptors, available: available, used: used, eventIndex: eventIndex)
        }
        self.index = index
        self.slotCount = layout.slotCount
        self.indirect = indirect
        self.maxRequestBytes = maxRequestBytes
        self.dataStride = layout.dataStride
        self.kickFD = kickFD
        self.callFD = callFD
        slotAddressBase = memory.guestPhysicalAddress(of: slots)
        dataAddressBase = memory.guestPhysicalAddress(of: data)
        if !isPacked {
            for slot in 0..<slotCount {
                writeSlotDescriptors(slot, memory: memory)
            }
        } else if !indirect {
            writePackedImages(memory: memory)
        }
    }

    /// Header → data → status, chained; the data descriptor's length and direction are
    /// filled in per request.
    private func writeSlotDescriptors(_ slot: Int, memory: SharedMemoryRegion) {
        let table = descriptorTable(of: slot)
        let first = firstDescriptor(of: slot)
        let next = VirtqueueLayout.descriptorFlagNext
        let write = VirtqueueLayout.descriptorFlagWrite
        DriverVirtqueue.writeDescriptor(table, first, address: memory.guestPhysicalAddress(of: header(of: slot)),
                                        length: 16, flags: next, next: UInt16(first + 1))
        DriverVirtqueue.writeDescriptor(table, first + 1, address: memory.guestPhysicalAddress(of: self.data(of: slot)),
                                        length: UInt32(maxRequestBytes), flags: next, next: UInt16(first + 2))
        DriverVirtqueue.writeDescriptor(table, first + 2, address: memory.guestPhysicalAddress(of: statusPointer(of: slot)),
                                        length: 1, flags: write, next: 0)
        if indirect {
            DriverVirtqueue.writeDescriptor(ring.descriptors, slot, address: memory.guestPhysicalAddress(of: table),
                                            length: UInt32(3 * VirtqueueLayout.descriptorSize),
                                            flags: VirtqueueLayout.descriptorFlagIndirect, next: 0)
        }
    }

    // MARK: - Slot memory

    @inlinable
    func slotBase(_ slot: Int) -> UnsafeMutableRawPointer { slots + slot * QueueMemoryLayout.slotStride }

    @inlinable
    public func header(of slot: Int) -> UnsafeMutableRawPointer { slotBase(slot) }

    @inlinable
    public func statusPointer(of slot: Int) -> UnsafeMutableRawPointer { slotBase(slot) + QueueMemoryLayout.statusOffset }

    /// The slot's data buffer (`maxRequestBytes` long, page-aligned).
    @inlinable
    public func data(of slot: Int) -> UnsafeMutableRawPointer { data + slot * dataStride }

    /// The status byte the device wrote (or `BlkStatus.pending` if it did not).
    @inlinable
    public func status(of slot: Int) -> UInt8 { statusPointer(of: slot).load(as: UInt8.self) }

    /// The table holding the slot's chain: the ring's own, or the slot's indirect table.
    @inlinable
    func descriptorTable(of slot: Int) -> UnsafeMutableRawPointer {
        indirect ? slotBase(slot) + QueueMemoryLayout.indirectTableOffset : ring.descriptors
    }

    @inlinable
    func firstDescriptor(of slot: Int) -> Int { indirect ? 0 : 3 * slot }

    /// The chain head that goes into the avail ring for `slot`.
    @inlinable
    public func head(of slot: Int) -> UInt16 { UInt16(truncatingIfNeeded: indirect ? slot : 3 * slot) }

    /// The slot a used-ring id refers to, or nil if it is no head this queue ever made.
    @inlinable
    public func slot(forUsedID id: UInt32) -> Int? {
        if indirect || isPacked { return id < UInt32(slotCount) ? Int(id) : nil }
        return id % 3 == 0 && id / 3 < UInt32(slotCount) ? Int(id / 3) : nil
    }

    // MARK: - Requests

    /// Fills in slot `slot`'s request: header, data length and direction (no data
    /// descriptor for `byteCount` 0, e.g. a flush), status reset to `pending`.
    @inlinable
    public func prepare(slot: Int, type: BlkRequestType, sector: UInt64, byteCount: Int) {
        let header = header(of: slot)
        header.storeBytes(of: type.rawValue.littleEndian, as: UInt32.self)
        header.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        header.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
        statusPointer(of: slot).storeBytes(of: BlkStatus.pending, as: UInt8.self)
        if isPacked {
            preparePacked(slot: slot, deviceWritesData: type.deviceWritesData, byteCount: byteCount)
            return
        }
        let table = descriptorTable(of: slot)
        let first = firstDescriptor(of: slot)
        let next = VirtqueueLayout.descriptorFlagNext
        // The header descriptor skips the data descriptor when there is no data.
        let headerNext = UInt16(truncatingIfNeeded: byteCount > 0 ? first + 1 : first + 2)
        (table + first * VirtqueueLayout.descriptorSize).storeBytes(of: headerNext.littleEndian, toByteOffset: 14, as: UInt16.self)
        if byteCount > 0 {
            let flags = type.deviceWritesData ? next | VirtqueueLayout.descriptorFlagWrite : next
            DriverVirtqueue.updateDescriptor(table, first + 1, length: UInt32(truncatingIfNeeded: byteCount), flags: flags)
        }
    }

    /// Queues slot `slot` in the avail ring (visible to the device after `publish`).
    @inlinable
    public mutating func submit(slot: Int) {
        if isPacked {
            submitPacked(slot: slot)
        } else {
            ring.pushAvailable(head: head(of: slot))
        }
    }

    /// Publishes the avail index and kicks the backend if it asked for it.
    /// Returns whether a kick was sent.
    @inlinable
    @discardableResult
    public mutating func publish() -> Bool {
        let needsKick = isPacked ? packedRing!.publish() : ring.publishAvailable()
        guard needsKick else { return false }
        kick()
        return true
    }

    /// Writes the kick eventfd.
    @inlinable
    public func kick() {
        var one: UInt64 = 1
        _ = write(kickFD, &one, 8)
    }

    /// Blocks until the backend signals the call eventfd; returns the number of signals
    /// folded into this wakeup (0 if interrupted). One read() when the fd is blocking; if
    /// the backend made it non-blocking (see `makeCallBlocking`), poll() and read again.
    @inlinable
    public func waitForCall() -> UInt64 {
        var value: UInt64 = 0
        if read(callFD, &value, 8) == 8 { return value }
        guard errno == EAGAIN else { return 0 }
        var descriptor = pollfd(fd: callFD, events: Int16(POLLIN), revents: 0)
        _ = poll(&descriptor, 1, -1)
        return read(callFD, &value, 8) == 8 ? value : 0
    }

    /// Clears O_NONBLOCK on the call eventfd. The fd's file description is shared with the
    /// backend, and QEMU-based backends (qsd) set O_NONBLOCK on every eventfd they receive;
    /// they only ever write the call fd, which cannot block in practice (the counter would
    /// have to reach 2^64 - 2), so a blocking description lets `waitForCall` sleep in a
    /// single read(). Returns false if fcntl failed (waiting then falls back to poll()).
    @discardableResult
    public func makeCallBlocking() -> Bool {
        let flags = fcntl(callFD, F_GETFL)
        guard flags >= 0 else { return false }
        return flags & O_NONBLOCK == 0 || fcntl(callFD, F_SETFL, flags & ~O_NONBLOCK) == 0
    }

    /// Signals received on the call eventfd and not yet read, without blocking.
    public func takePendingCalls() -> UInt64 {
        var descriptor = pollfd(fd: callFD, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, 0) == 1 else { return 0 }
        var value: UInt64 = 0
        return read(callFD, &value, 8) == 8 ? value : 0
    }
}
