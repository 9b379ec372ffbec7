import ControlThread
import CSpindle
import Foundation
import Glibc
import SpindleTestSupport
import Testing
@testable import VhostUser
import VhostUserFrontend

/// The session with VIRTIO_F_RING_PACKED negotiated: any ring size, SET_VRING_ADDR read as
/// descriptor ring / driver area / device area, SET_VRING_BASE and GET_VRING_BASE carrying
/// both positions and wrap counters, and the device asked for a packed queue.
@Suite(.serialized) struct PackedRingSessionTests {
    static let features = FakeDevice.version1 | PackedVirtqueueLayout.featureMask

    /// Ring 0 of size 3 up to SET_VRING_KICK, without protocol features.
    func startPackedRing(on frontend: RawFrontend, memory: SharedMemoryRegion, base: UInt32,
                         callFD: Int32, kickFD: Int32) throws {
        let descriptors = try memory.allocate(16 * 3, alignment: 16)
        let driverArea = try memory.allocate(4, alignment: 4)
        let deviceArea = try memory.allocate(4, alignment: 4)
        try frontend.send(.setOwner)
        try frontend.send(.setFeatures(Self.features))
        try frontend.send(.setMemTable([VhostUserMemoryRegionFD(region: memory.regionDescription, fd: memory.fd)]))
        try frontend.send(.setVringNum(VhostUserVringState(index: 0, num: 3)))
        try frontend.send(.setVringBase(VhostUserVringState(index: 0, num: base)))
        try frontend.send(.setVringAddr(VhostUserVringAddress(
            index: 0, flags: 0, descUserAddr: memory.userAddress(of: descriptors), usedUserAddr: memory.userAddress(of: deviceArea),
            availUserAddr: memory.userAddress(of: driverArea), logGuestAddr: 0)))
        try frontend.send(.setVringCall(VhostUserVringFile(index: 0, fd: callFD)))
        try frontend.send(.setVringKick(VhostUserVringFile(index: 0, fd: kickFD)))
    }

    @Test @ControlActor func packedRingStartsAndReportsItsBase() async throws {
        let device = FakeDevice()
        device.deviceFeatures |= PackedVirtqueueLayout.featureMask
        let fixture = try SessionFixture(device: device)
        let frontend = try fixture.connectSocketpair()
        let memory = try SharedMemoryRegion(size: 1 << 20, name: "packed-session-\(UUID().uuidString.prefix(8))")
        let kickFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)), callFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        defer {
            Glibc.close(kickFD)
            Glibc.close(callFD)
        }
        let base = PackedVringBase(availablePosition: 2, availableWrap: false, usedPosition: 1, usedWrap: true)
        try await onThreadOfItsOwn {
            try startPackedRing(on: frontend, memory: memory, base: base.encoded, callFD: callFD, kickFD: kickFD)
        }
        #expect(await fixture.eventually { fixture.device.queues.first?.events.isEmpty == false })
        let queue = try #require(fixture.device.queues.first)
        #expect(queue.packed)
        #expect(queue.ringBase == base.encoded)

        let reply = try await onThreadOfItsOwn {
            try VhostUserReplyDecoder.vringState(try frontend.call(.getVringBase(VhostUserVringState(index: 0, num: 0))),
                                                 to: .getVringBase)
        }
        #expect(reply == VhostUserVringState(index: 0, num: base.encoded))
        #expect(queue.events.contains(.stopped(iothread: "session-test")))
        await fixture.tearDown()
    }

    /// A base naming a position outside the ring cannot start: the ring is reported broken
    /// and the connection closed, as for split rings outside guest memory.
    @Test @ControlActor func packedBaseOutsideTheRingIsRefused() async throws {
        let device = FakeDevice()
        device.deviceFeatures |= PackedVirtqueueLayout.featureMask
        let fixture = try SessionFixture(device: device)
        let frontend = try fixture.connectSocketpair()
        let memory = try SharedMemoryRegion(size: 1 << 20, name: "packed-session-\(UUID().uuidString.prefix(8))")
        let kickFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)), callFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        defer {
            Glibc.close(kickFD)
            Glibc.close(callFD)
        }
        let base = PackedVringBase(availablePosition: 3, availableWrap: true, usedPosition: 0, usedWrap: true)
        try await onThreadOfItsOwn {
            try startPackedRing(on: frontend, memory: memory, base: base.encoded, callFD: callFD, kickFD: kickFD)
        }
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        #expect(fixture.device.queues.isEmpty)
        await fixture.tearDown()
    }
}
