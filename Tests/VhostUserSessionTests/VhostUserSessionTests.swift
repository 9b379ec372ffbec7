import ControlThread
import CSpindle
import Glibc
import IOThreads
import SpindleTestSupport
import Testing
@testable import VhostUser
import VhostUserFrontend

/// The device-agnostic vhost-user session, in process: a fake device on the control thread,
/// one IOThread, and a frontend (the frontend library, or raw messages over a socketpair)
/// on a thread of its own. No spawned binary.
@Suite(.serialized) struct VhostUserSessionTests {
    private static let protocolBit = VhostUserFeatureBits.protocolFeatures

    @Test @ControlActor func negotiatesFeaturesAndAnswersGetConfigFromTheDevice() async throws {
        let device = FakeDevice(queueCount: 1, capacitySectors: 4096)
        device.withheldProtocolFeatures = [.inflightSHMFD]
        let fixture = try SessionFixture(device: device)
        let path = try fixture.listen()
        var frontend: Handed<VhostUserBlkFrontend>? = try await onThreadOfItsOwn {
            Handed(try VhostUserBlkFrontend(socketPath: path, options: FrontendOptions(queueCount: 1, replyTimeoutMilliseconds: RawFrontend.patienceMilliseconds)))
        }
        let session = try #require(fixture.session)
        let offered = device.deviceFeatures | Self.protocolBit | VhostUserFeatureBits.logAll
        #expect(frontend?.value.offeredFeatures == offered)
        #expect(session.negotiatedFeatures == frontend?.value.negotiatedFeatures)
        #expect(session.negotiatedFeatures == FakeDevice.version1 | FakeDevice.flush | FakeDevice.eventIndex | FakeDevice.multiQueue | Self.protocolBit)
        // The device withheld INFLIGHT_SHMFD: never offered; the rest is what both sides know.
        #expect(!session.offeredProtocolFeatures.contains(.inflightSHMFD))
        #expect(session.offeredProtocolFeatures == VhostUserBackendSession.implementedProtocolFeatures.subtracting(.inflightSHMFD))
        #expect(session.negotiatedProtocolFeatures == frontend?.value.protocolFeatures)
        #expect(session.negotiatedProtocolFeatures == [.mq, .replyAck, .config, .configureMemSlots])
        // GET_CONFIG was answered from the device's config space.
        #expect(frontend?.value.config?.capacitySectors == 4096)
        #expect(frontend?.value.config?.numQueues == 1)

        frontend = nil  // disconnects
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        await fixture.tearDown()
    }

    @Test @ControlActor func aFeatureNeverOfferedEndsTheSession() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let offered = try await onThreadOfItsOwn {
            try VhostUserReplyDecoder.u64(try frontend.call(.getFeatures), to: .getFeatures)
        }
        #expect(offered == fixture.device.deviceFeatures | Self.protocolBit | VhostUserFeatureBits.logAll)
        let hungUp = try await onThreadOfItsOwn {
            try frontend.send(.setFeatures(offered | 1 << 40))
            return frontend.sessionHungUp()
        }
        #expect(hungUp)
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        #expect(fixture.session?.isClosed == true)
        #expect(fixture.session?.negotiatedFeatures == 0)
        await fixture.tearDown()
    }

    @Test @ControlActor func configSpaceIsTheDevices() async throws {
        let fixture = try SessionFixture(device: FakeDevice(queueCount: 3))
        let frontend = try fixture.connectSocketpair()
        let window = VhostUserConfigSpace(offset: 34, flags: 0, payload: [0, 0])
        let (inside, outside) = try await onThreadOfItsOwn {
            let inside = try VhostUserReplyDecoder.config(try frontend.call(.getConfig(window)))
            let outside = try VhostUserReplyDecoder.config(try frontend.call(.getConfig(
                VhostUserConfigSpace(offset: 58, flags: 0, payload: [0, 0, 0, 0]))))
            try frontend.send(.setFeatures(FakeDevice.version1 | FakeDevice.flush))
            try frontend.send(.setConfig(VhostUserConfigSpace(offset: 32, flags: 0, payload: [1])))
            _ = try frontend.call(.getFeatures)  // a round trip: SET_CONFIG has been handled
            return (inside, outside)
        }
        #expect(inside?.offset == 34)
        #expect(inside?.payload == [3, 0])  // num_queues, from the device
        #expect(outside == nil, "a window past the config space is refused")
        // SET_CONFIG reached the device with the features negotiated by then.
        #expect(fixture.device.configWrites.count == 1)
        #expect(fixture.device.configWrites.first?.offset == 32)
        #expect(fixture.device.configWrites.first?.bytes == [1])
        #expect(fixture.device.configWrites.first?.features == FakeDevice.version1 | FakeDevice.flush)
        await fixture.tearDown()
    }

    @Test @ControlActor func startedRingsReachTheDevicesQueueFactoryOnAnIOThread() async throws {
        let fixture = try SessionFixture(device: FakeDevice(queueCount: 2))
        let path = try fixture.listen()
        let frontend = try await onThreadOfItsOwn {
            Handed(try VhostUserBlkFrontend(socketPath: path, options: FrontendOptions(queueCount: 2, replyTimeoutMilliseconds: RawFrontend.patienceMilliseconds)))
        }
        #expect(await fixture.eventually { fixture.device.queues.allSatisfy { !$0.events.isEmpty } && fixture.device.queues.count == 2 })
        let queues = fixture.device.queues
        #expect(queues.map(\.index) == [0, 1])
        #expect(fixture.threads.placed == ["fake0/0", "fake0/1"])
        for queue in queues {
            #expect(queue.events.first == .started(iothread: "session-test", onThatThread: true))
            #expect(queue.kickFD >= 0 && queue.callFD >= 0)
        }
        // The frontend's shutdown: SET_VRING_ENABLE 0 stops each queue, GET_VRING_BASE reports it.
        try await onThreadOfItsOwn { try frontend.value.shutdown(finalQueues: frontend.value.queues) }
        for queue in queues { #expect(queue.events.contains(.stopped(iothread: "session-test"))) }
        #expect(fixture.threads.stopped == ["fake0/0@session-test", "fake0/1@session-test"])
        await fixture.tearDown()
    }

    @Test @ControlActor func getVringBaseStopsTheQueueBeforeAnswering() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        fixture.device.requestsTakenBeforeStop = 4
        let frontend = try fixture.connectSocketpair()
        let ring = try RawRing()
        try await onThreadOfItsOwn { try ring.start(on: frontend, features: FakeDevice.version1, base: 3) }
        #expect(await fixture.eventually { fixture.device.queues.first?.events.isEmpty == false })
        let queue = try #require(fixture.device.queues.first)
        #expect(queue.ringBase == 3)
        #expect(!queue.events.contains(.stopped(iothread: "session-test")))

        let reply = try await onThreadOfItsOwn {
            try VhostUserReplyDecoder.vringState(try frontend.call(.getVringBase(VhostUserVringState(index: 0, num: 0))),
                                                 to: .getVringBase)
        }
        // The answer is what the stopped queue reported (base 3 + 4 taken), so it came after the stop.
        #expect(reply == VhostUserVringState(index: 0, num: 7))
        #expect(queue.events.contains(.stopped(iothread: "session-test")))
        #expect(fixture.threads.stopped == ["fake0/0@session-test"])
        let session = try #require(fixture.session)
        #expect(session.vrings[0].running == nil)
        #expect(session.vrings[0].kickFD == nil && session.vrings[0].callFD == nil)
        #expect(session.vrings[0].base == 7)
        await fixture.tearDown()
    }

    @Test @ControlActor func theDeviceTakesItsOwnRequestsAndOnlyThose() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let (acked, hungUp) = try await onThreadOfItsOwn {
            try frontend.send(.setProtocolFeatures(VhostUserProtocolFeatures.replyAck.rawValue))
            // NET_SET_MTU, which the session leaves to the device: acknowledged as the device says.
            let reply = try frontend.call(message: VhostUserMessage(request: VhostUserRequestCode.netSetMTU.rawValue,
                                                                    flags: [.version1, .needReply], payload: [0xdc, 5, 0, 0, 0, 0, 0, 0]))
            let acked = try VhostUserReplyDecoder.ack(reply, to: .netSetMTU)
            // SEND_RARP, which the device does not take either: the session ends.
            try frontend.sendMessage(VhostUserMessage(request: VhostUserRequestCode.sendRARP.rawValue, flags: .version1,
                                                      payload: [UInt8](repeating: 0, count: 8)))
            return (acked, frontend.sessionHungUp())
        }
        #expect(acked)
        #expect(fixture.device.deviceRequests.map(\.code) == [.netSetMTU])
        #expect(fixture.device.deviceRequests.first?.payload == [0xdc, 5, 0, 0, 0, 0, 0, 0])
        #expect(hungUp)
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        await fixture.tearDown()
    }

    @Test @ControlActor func aMalformedMessageEndsTheSession() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let hungUp = try await onThreadOfItsOwn {
            // SET_FEATURES with a 4-byte payload (it takes a u64).
            try frontend.sendMessage(VhostUserMessage(request: VhostUserRequestCode.setFeatures.rawValue,
                                                      flags: .version1, payload: [1, 0, 0, 0]))
            return frontend.sessionHungUp()
        }
        #expect(hungUp)
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        #expect(fixture.device.queues.isEmpty)
        await fixture.tearDown()
    }

    @Test @ControlActor func aDisconnectReleasesEverything() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let ring = try RawRing()
        var channel: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &channel) == 0)
        defer { Glibc.close(channel[1]) }
        let sessionEnd = channel[0]
        try await onThreadOfItsOwn {
            try ring.start(on: frontend, features: FakeDevice.version1, base: 0)
            try frontend.send(.setBackendReqFD(fd: sessionEnd))
        }
        Glibc.close(channel[0])
        #expect(await fixture.eventually { fixture.device.queues.first?.events.isEmpty == false })
        let session = try #require(fixture.session)
        #expect(await fixture.eventually { session.backendChannelFD != nil })
        // The session's own mapping, found by its address (other tests in this process map and
        // unmap all the time, so /proc/self/maps is looked at again until it agrees).
        let mapped = try #require(session.memory?.mappings.first.map { UInt(bitPattern: $0.hostAddress) })
        #expect(await fixture.eventually { ring.maps(address: mapped) }, "the session maps the guest memory")

        frontend.hangUp()
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        let queue = try #require(fixture.device.queues.first)
        #expect(queue.events.contains(.stopped(iothread: "session-test")), "the running queue was stopped")
        #expect(fixture.threads.stopped == ["fake0/0@session-test"], "its IOThread was given back")
        #expect(session.vrings.allSatisfy { $0.running == nil && $0.kickFD == nil && $0.callFD == nil && $0.errFD == nil })
        #expect(session.backendChannelFD == nil)
        #expect(session.memory == nil && session.inflight == nil)
        let unmapped = await fixture.eventually { !ring.maps(address: mapped) }
        #expect(unmapped, "the session unmapped the guest memory (mapped at 0x\(String(mapped, radix: 16)); now: \(ring.mappingLines))")
        // The backend channel's other end sees the session's end closed.
        var byte: UInt8 = 0
        #expect(recv(channel[1], &byte, 1, Int32(MSG_DONTWAIT)) == 0)
        await fixture.tearDown()
    }
}
