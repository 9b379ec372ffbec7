import Testing
import SpindleTestSupport
import VhostUser
@testable import VhostUserFrontend

/// The frontend's packed driver ring against Spindle's device-side `PackedVirtqueue` in one
/// process (test memory, no socket): chains of varying length over many laps at odd ring
/// sizes, completions out of order, and the kick/call suppression arithmetic.
struct PackedDriverVirtqueueTests {
    /// A driver ring over MockPackedQueue's memory layout, and the device's view of it.
    static func pair(size: Int, ids: Int, eventIndex: Bool = false) throws -> (MockPackedQueue, PackedDriverVirtqueue, PackedVirtqueue) {
        let mock = MockPackedQueue(size: size)
        let memory = mock.memory
        let ring = try #require(memory.translate(gpa: MockPackedQueue.descriptorRing, length: UInt64(16 * size)))
        let driverArea = try #require(memory.translate(gpa: MockPackedQueue.driverArea, length: 4))
        let deviceArea = try #require(memory.translate(gpa: MockPackedQueue.deviceArea, length: 4))
        let driver = PackedDriverVirtqueue(size: size, descriptors: ring, driverArea: driverArea, deviceArea: deviceArea,
                                           eventIndex: eventIndex, idCount: ids)
        let device = try mock.queue(features: eventIndex ? [.eventIndex] : [])
        return (mock, driver, device)
    }

    @Test(arguments: [1, 3, 7, 128])
    func chainsWrapAroundOddSizes(size: Int) throws {
        let ids = max(1, size / 3)
        let (mock, initialDriver, initialDevice) = try Self.pair(size: size, ids: ids)
        var driver = initialDriver, device = initialDevice
        defer { withExtendedLifetime(mock) {} }
        // Many laps; chains of 1...3 descriptors (bounded by the ring), each id in turn.
        for round in 0..<(size * 6) {
            let id = UInt16(round % ids)
            let length = min(1 + round % 3, size)
            for k in 0..<length {
                driver.appendDescriptor(address: 0x10000 + UInt64(k) * 512, length: 512,
                                        flags: k < length - 1 ? VirtqueueLayout.descriptorFlagNext : VirtqueueLayout.descriptorFlagWrite,
                                        id: id)
            }
            driver.finishChain(id: id)
            _ = driver.publish()
            let popped = try #require(try device.popAvailable())
            #expect(popped == id)
            device.pushUsed(head: popped, writtenLength: UInt32(round))
            device.publishUsed()
            #expect(driver.pendingUsedCount() == 1)
            let used = driver.popUsed()
            #expect(used.id == UInt32(id) && used.length == UInt32(round))
            #expect(driver.pendingUsedCount() == 0)
        }
        #expect(driver.base == device.base)
    }

    @Test
    func outOfOrderCompletionsAndABrokenID() throws {
        let (mock, initialDriver, initialDevice) = try Self.pair(size: 7, ids: 3)
        var driver = initialDriver, device = initialDevice
        for id in UInt16(0)..<3 {
            driver.appendDescriptor(address: 0x10000, length: 16, flags: VirtqueueLayout.descriptorFlagNext, id: id)
            driver.appendDescriptor(address: 0x11000, length: 1, flags: VirtqueueLayout.descriptorFlagWrite, id: id)
            driver.finishChain(id: id)
        }
        let kicked = driver.publish()
        #expect(kicked)  // ENABLE: kick
        for _ in 0..<3 { _ = try device.popAvailable() }
        for id: UInt16 in [2, 0, 1] { device.pushUsed(head: id, writtenLength: 1) }
        device.publishUsed()
        #expect(driver.pendingUsedCount() == 3)
        let order = [driver.popUsed().id, driver.popUsed().id, driver.popUsed().id]
        #expect(order == [2, 0, 1])
        // A used descriptor naming an id that is not in flight: the driver reports it.
        let used = PackedVirtqueueLayout.usedFlags(wrap: driver.usedWrap)
        mock.setDescriptor(Int(driver.usedPosition), address: 0, length: 0, id: 1, flags: used)
        #expect(driver.pendingUsedCount() == nil)
    }

    @Test
    func kickAndCallSuppression() throws {
        let (mock, initialDriver, initialDevice) = try Self.pair(size: 7, ids: 2, eventIndex: true)
        var driver = initialDriver, device = initialDevice
        device.disableGuestKicks()
        driver.appendDescriptor(address: 0x10000, length: 1, flags: VirtqueueLayout.descriptorFlagWrite, id: 0)
        driver.finishChain(id: 0)
        let kickedWhileDisabled = driver.publish()
        #expect(!kickedWhileDisabled, "kicked although the device area says DISABLE")
        let kickedForNothing = driver.publish()
        #expect(!kickedForNothing, "nothing new, yet a kick")
        // DESC at the device's next position: the next chain is the one it waits for.
        _ = device.enableGuestKicks()
        driver.appendDescriptor(address: 0x10000, length: 1, flags: VirtqueueLayout.descriptorFlagWrite, id: 1)
        driver.finishChain(id: 1)
        let kickedPastEvent = driver.publish()
        #expect(!kickedPastEvent, "device's event is at position 0, which was made available before")
        // Calls: DISABLE while polling, DESC at the next used position otherwise.
        driver.suppressCalls()
        #expect(mock.guest.read(UInt16.self, at: MockPackedQueue.driverArea + 2) == PackedVirtqueueLayout.eventFlagsDisable)
        #expect(!driver.requestCallOnNextUsed())
        #expect(mock.guest.read(UInt16.self, at: MockPackedQueue.driverArea + 2) == PackedVirtqueueLayout.eventFlagsDescriptor)
        #expect(mock.guest.read(UInt16.self, at: MockPackedQueue.driverArea) == PackedVringBase.half(0, true))
    }

    /// The driver's event arithmetic agrees with the device's for every event position, lap
    /// and window at a few odd sizes.
    @Test(arguments: [3, 7, 9])
    func needsEventAgreesWithTheDevice(size: Int) {
        let n = UInt16(size)
        for newPosition in 0..<n {
            for wrap in [false, true] {
                for advanced in UInt32(0)...UInt32(size) {
                    for event in 0..<n {
                        for eventWrap in [false, true] {
                            let offWrap = PackedVringBase.half(event, eventWrap)
                            #expect(PackedDriverVirtqueue.needsEvent(offWrap: offWrap, newPosition: newPosition, newWrap: wrap,
                                                                     advanced: advanced, size: n)
                                    == PackedVirtqueue.needsEvent(offWrap: offWrap, newPosition: newPosition, newWrap: wrap,
                                                                  advanced: advanced, size: n))
                        }
                    }
                }
            }
        }
    }
}
