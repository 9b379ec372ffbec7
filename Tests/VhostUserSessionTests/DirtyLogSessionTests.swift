import ControlThread
import CSpindle
import Foundation
import Glibc
import SpindleTestSupport
import Testing
@testable import VhostUser

/// A log memfd of the frontend's, `size` bytes, named so its mappings can be counted.
final class FrontendLog: @unchecked Sendable {
    let name = "vhost-log-\(UUID().uuidString.prefix(8))"
    let fd: Int32
    let size: UInt64
    init(size: UInt64 = 4096) {
        self.size = size
        fd = memfd_create(name, UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        precondition(fd >= 0 && ftruncate(fd, off_t(size)) == 0)
    }
    deinit { close(fd) }
    var request: VhostUserRequest { .setLogBase(VhostUserLogDescription(mmapSize: size, mmapOffset: 0), fd: fd) }
    /// This process's mappings of the log (the session's).
    var mappingCount: Int {
        guard let file = fopen("/proc/self/maps", "r") else { return -1 }
        defer { fclose(file) }
        var count = 0
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0 {
            if let line, String(cString: line).contains("memfd:\(name) ") { count += 1 }
        }
        free(line)
        return count
    }
}

/// Dirty logging in the session, with a fake queue recording the log it is given: LOG_ALL
/// before the log, the log reaching a running queue before the reply, the used ring's log
/// flag, LOG_ALL off and on again, a log replaced (the old one unmapped before the reply),
/// bad logs answered and kept out, and the x-dirty-log=unmarked hook.
@Suite(.serialized) struct DirtyLogSessionTests {
    static let protocolBit = VhostUserFeatureBits.protocolFeatures
    static let logAll = VhostUserFeatureBits.logAll

    /// Ring 0 running, LOG_SHMFD negotiated (no REPLY_ACK, so nothing but SET_LOG_BASE and
    /// GETs is answered).
    @ControlActor
    private func runningRing(_ device: FakeDevice = FakeDevice(), logAll: Bool) async throws -> (SessionFixture, RawFrontend, RawRing) {
        let fixture = try SessionFixture(device: device)
        let frontend = try fixture.connectSocketpair()
        let ring = try RawRing()
        let features = FakeDevice.version1 | Self.protocolBit | (logAll ? Self.logAll : 0)
        try await onThreadOfItsOwn {
            try frontend.send(.setProtocolFeatures(VhostUserProtocolFeatures.logSHMFD.rawValue))
            try ring.start(on: frontend, features: features, base: 0)
            try frontend.send(.setVringEnable(VhostUserVringState(index: 0, num: 1)))
            _ = try frontend.call(.getFeatures)
        }
        #expect(await fixture.eventually { fixture.device.queues.count == 1 })
        return (fixture, frontend, ring)
    }

    /// SET_LOG_BASE's reply (a u64 0 whatever happened).
    private func setLogBase(_ frontend: RawFrontend, _ request: VhostUserRequest) async throws -> UInt64 {
        try await onThreadOfItsOwn { try VhostUserReplyDecoder.u64(try frontend.call(request), to: .setLogBase) }
    }

    /// A round trip: every message sent before has been handled.
    private func roundTrip(_ frontend: RawFrontend, after send: @escaping @Sendable () throws -> Void = {}) async throws {
        try await onThreadOfItsOwn {
            try send()
            _ = try frontend.call(.getFeatures)
        }
    }

    @Test @ControlActor func offersLogAllWithLogShmfd() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let (features, protocolFeatures) = try await onThreadOfItsOwn {
            (try VhostUserReplyDecoder.u64(try frontend.call(.getFeatures), to: .getFeatures),
             try VhostUserReplyDecoder.u64(try frontend.call(.getProtocolFeatures), to: .getProtocolFeatures))
        }
        #expect(features & Self.logAll != 0)
        #expect(protocolFeatures & VhostUserProtocolFeatures.logSHMFD.rawValue != 0)
        await fixture.tearDown()

        let withholding = FakeDevice()
        withholding.withheldProtocolFeatures = [.logSHMFD]
        let other = try SessionFixture(device: withholding)
        let otherFrontend = try other.connectSocketpair()
        let offered = try await onThreadOfItsOwn { try VhostUserReplyDecoder.u64(try otherFrontend.call(.getFeatures), to: .getFeatures) }
        #expect(offered & Self.logAll == 0, "no LOG_ALL without LOG_SHMFD")
        await other.tearDown()
    }

    @Test @ControlActor func logAllBeforeTheLogMarksNothingThenTheLogAndUsedRingReachTheRunningQueue() async throws {
        let (fixture, frontend, ring) = try await runningRing(logAll: true)
        let queue = try #require(fixture.device.queues.first)
        #expect(queue.dirtyLog == .off, "LOG_ALL without a log: nothing to mark")
        let log = FrontendLog()
        #expect(try await setLogBase(frontend, log.request) == 0)
        let bitmap = try #require(fixture.session?.dirtyLog?.bitmap)  // not the log: that would keep it mapped
        #expect(queue.dirtyLog == VirtqueueDirtyLog(bitmap: bitmap, usedRingGuestAddress: nil))
        #expect(log.mappingCount == 1)

        var flagged = try #require(ring.ringAddress)
        flagged.flags = VhostUserVringAddress.flagLog
        flagged.logGuestAddr = 0x4000
        try await roundTrip(frontend) { [flagged] in try frontend.send(.setVringAddr(flagged)) }
        #expect(queue.dirtyLog == VirtqueueDirtyLog(bitmap: bitmap, usedRingGuestAddress: 0x4000))
        #expect(fixture.device.queues.count == 1, "the same ring: switched in place, not restarted")
        #expect(queue.events.contains(.dirtyLogReplaced(VirtqueueDirtyLog(bitmap: bitmap, usedRingGuestAddress: 0x4000))))

        // The session's end stops marking and unmaps the log.
        frontend.hangUp()
        #expect(await fixture.eventually { fixture.closedCount == 1 })
        #expect(log.mappingCount == 0, "unmapped when the session ends")
        await fixture.tearDown()
    }

    /// QEMU's order: SET_LOG_BASE, then LOG_ALL on; cancelled: LOG_ALL off (and the ring's
    /// flag off), then it frees the log; a second migration shares a new log first.
    @Test @ControlActor func logAllOffThenOnAgain() async throws {
        let (fixture, frontend, ring) = try await runningRing(logAll: false)
        let queue = try #require(fixture.device.queues.first)
        let log = FrontendLog()
        #expect(try await setLogBase(frontend, log.request) == 0)
        #expect(queue.dirtyLog == .off, "a log without LOG_ALL: nothing marked yet")
        let bitmap = try #require(fixture.session?.dirtyLog?.bitmap)
        try await roundTrip(frontend) { try frontend.send(.setFeatures(FakeDevice.version1 | Self.protocolBit | Self.logAll)) }
        #expect(queue.dirtyLog?.bitmap == bitmap)

        var address = try #require(ring.ringAddress)
        address.flags = 0
        try await roundTrip(frontend) { try frontend.send(.setFeatures(FakeDevice.version1 | Self.protocolBit)) }
        try await roundTrip(frontend) { [address] in try frontend.send(.setVringAddr(address)) }
        #expect(queue.dirtyLog == .off)
        #expect(log.mappingCount == 0, "unmapped once logging is off: QEMU frees it")

        let second = FrontendLog()
        #expect(try await setLogBase(frontend, second.request) == 0)
        try await roundTrip(frontend) { try frontend.send(.setFeatures(FakeDevice.version1 | Self.protocolBit | Self.logAll)) }
        #expect(queue.dirtyLog?.bitmap == fixture.session?.dirtyLog?.bitmap)
        #expect(queue.dirtyLog?.bitmap != nil)
        #expect(second.mappingCount == 1)
        #expect(fixture.session?.isClosed == false)
        await fixture.tearDown()
    }

    @Test @ControlActor func aReplacedLogIsUnmappedBeforeTheReply() async throws {
        let (fixture, frontend, _) = try await runningRing(logAll: true)
        let queue = try #require(fixture.device.queues.first)
        let first = FrontendLog(), second = FrontendLog(size: 8192)
        #expect(try await setLogBase(frontend, first.request) == 0)
        #expect(first.mappingCount == 1)
        #expect(try await setLogBase(frontend, second.request) == 0)
        // By the time the reply arrived, the queue had switched and the old log was gone.
        #expect(first.mappingCount == 0)
        #expect(second.mappingCount == 1)
        #expect(queue.dirtyLog?.bitmap?.wordCount == 1024)
        await fixture.tearDown()
        #expect(second.mappingCount == 0)
    }

    @Test @ControlActor func badLogsAreAnsweredAndThePreviousOneStays() async throws {
        let (fixture, frontend, _) = try await runningRing(logAll: true)
        let queue = try #require(fixture.device.queues.first)
        let good = FrontendLog()
        let short = FrontendLog(size: 4096)
        let bad: [VhostUserRequest] = [
            .setLogBase(VhostUserLogDescription(mmapSize: 0, mmapOffset: 0), fd: short.fd),
            .setLogBase(VhostUserLogDescription(mmapSize: 12, mmapOffset: 0), fd: short.fd),
            .setLogBase(VhostUserLogDescription(mmapSize: 8192, mmapOffset: 0), fd: short.fd),
            .setLogBase(VhostUserLogDescription(mmapSize: 4096, mmapOffset: 1 << 40), fd: short.fd),
            .setLogBase(VhostUserLogDescription(mmapSize: 4096, mmapOffset: 0), fd: nil),
        ]
        for request in bad { #expect(try await setLogBase(frontend, request) == 0) }
        #expect(queue.dirtyLog == .off, "no log yet, none taken")
        #expect(try await setLogBase(frontend, good.request) == 0)
        let kept = queue.dirtyLog
        for request in bad { #expect(try await setLogBase(frontend, request) == 0) }
        #expect(queue.dirtyLog == kept)
        #expect(good.mappingCount == 1)
        #expect(short.mappingCount == 0)
        #expect(fixture.session?.isClosed == false)
        await fixture.tearDown()
    }

    @Test @ControlActor func setLogFDIsAcceptedAndWithoutLogShmfdSetLogBaseIsNotAnswered() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let log = FrontendLog()
        let answered = try await onThreadOfItsOwn {
            try frontend.send(.setLogFD(fd: eventfd(0, Int32(EFD_CLOEXEC))))
            try frontend.send(log.request)  // LOG_SHMFD not negotiated: QEMU would not read a reply
            return try frontend.call(.getFeatures).header.request
        }
        #expect(answered == VhostUserRequestCode.getFeatures.rawValue)
        #expect(log.mappingCount == 0)
        #expect(fixture.session?.isClosed == false)
        await fixture.tearDown()
    }

    /// x-dirty-log=unmarked: everything is accepted and answered, nothing reaches a queue.
    @Test @ControlActor func aDeviceThatMarksNothingNeverInstallsTheLog() async throws {
        let device = FakeDevice()
        device.marksDirtyPages = false
        let (fixture, frontend, ring) = try await runningRing(device, logAll: true)
        let queue = try #require(fixture.device.queues.first)
        let log = FrontendLog()
        #expect(try await setLogBase(frontend, log.request) == 0)
        var flagged = try #require(ring.ringAddress)
        flagged.flags = VhostUserVringAddress.flagLog
        try await roundTrip(frontend) { [flagged] in try frontend.send(.setVringAddr(flagged)) }
        #expect(queue.dirtyLog == .off)
        #expect(fixture.session?.isClosed == false)
        await fixture.tearDown()
    }
}
