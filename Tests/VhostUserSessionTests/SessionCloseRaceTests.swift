import ControlThread
import CSpindle
import Foundation
import Glibc
import IOThreads
import SpindleTestSupport
import Testing
@testable import VhostUser
import VhostUserFrontend

/// A session that closes while one of the frontend's messages waits for an IOThread must
/// still let go of everything that message brought: a memory table kept after the close
/// would stay mapped (the guest's RAM kept allocated on the host) for as long as anything
/// holds the session object. (The close waits for the same queue stops as the message and
/// resumes after it; the session also releases what a handler stores after a close.)
@Suite(.serialized) struct SessionCloseRaceTests {
    /// How many descriptors this process has open that name `name` (memfds, sockets).
    static func openDescriptors(naming name: String) -> Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.filter { entry in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(entry)"))?.contains(name) == true
        }.count
    }

    @Test @ControlActor func aMemoryTableMappedWhileTheSessionClosesIsUnmapped() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let ring = try RawRing()
        try await onThreadOfItsOwn { try ring.start(on: frontend, features: FakeDevice.version1, base: 0) }
        #expect(await fixture.eventually { fixture.device.queues.first?.events.isEmpty == false })
        let session = try #require(fixture.session)

        // The IOThread is held, so the queue's stop (the memory table change's first step,
        // and the close's) waits there.
        let gate = PosixSemaphore()
        let held = PosixSemaphore()
        fixture.threads.thread.post { _ in
            held.post()
            gate.wait()
        }
        held.wait()
        let newName = "session-race-\(UUID().uuidString.prefix(8))"
        let newMemory = try SharedMemoryRegion(size: 1 << 20, name: newName)
        let newRegion = VhostUserMemoryRegionFD(region: newMemory.regionDescription, fd: newMemory.fd)
        try await onThreadOfItsOwn { try frontend.send(.setMemTable([newRegion])) }
        // The session mapped the new table and now waits for the ring to stop: two mappings
        // of the new memfd (the frontend's and the session's).
        let twoMappings = await fixture.eventually {
            let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
            return maps.split(separator: "\n").filter { $0.contains("memfd:\(newName) ") }.count == 2
        }
        #expect(twoMappings, "the session mapped the new table")

        // The export goes away meanwhile (or a queue broke): close, then let the IOThread go.
        let closing = Task { @ControlActor in await session.close(reason: "test: closed during SET_MEM_TABLE") }
        #expect(await fixture.eventually { session.isClosed })
        gate.post()
        await closing.value
        #expect(fixture.closedCount == 1)
        // The message's handler resumed after the close: nothing it stored stays.
        #expect(await fixture.eventually { session.memory == nil })
        let unmapped = await fixture.eventually {
            let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
            return maps.split(separator: "\n").filter { $0.contains("memfd:\(newName) ") }.count == 1
        }
        #expect(unmapped, "only the frontend's own mapping of the new table is left")
        #expect(await fixture.eventually { ring.mappingCount == 1 }, "the first table is unmapped too")
        #expect(session.vrings.allSatisfy { $0.running == nil && $0.kickFD == nil && $0.callFD == nil })
        withExtendedLifetime(newMemory) {}
        await fixture.tearDown()
    }

    @Test @ControlActor func eventfdsGivenWhileTheSessionClosesAreClosed() async throws {
        let fixture = try SessionFixture(device: FakeDevice())
        let frontend = try fixture.connectSocketpair()
        let ring = try RawRing()
        try await onThreadOfItsOwn { try ring.start(on: frontend, features: FakeDevice.version1, base: 0) }
        #expect(await fixture.eventually { fixture.device.queues.first?.events.isEmpty == false })
        let session = try #require(fixture.session)

        let gate = PosixSemaphore()
        let held = PosixSemaphore()
        fixture.threads.thread.post { _ in
            held.post()
            gate.wait()
        }
        held.wait()
        // A new kick eventfd for the running ring: the session stops the ring first (held).
        let kick = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        defer { Glibc.close(kick) }
        let before = Self.openDescriptors(naming: "anon_inode:[eventfd]")
        try await onThreadOfItsOwn { try frontend.send(.setVringKick(VhostUserVringFile(index: 0, fd: kick))) }
        // The session received its own copy of the eventfd.
        #expect(await fixture.eventually { Self.openDescriptors(naming: "anon_inode:[eventfd]") == before + 1 })
        let closing = Task { @ControlActor in await session.close(reason: "test: closed during SET_VRING_KICK") }
        #expect(await fixture.eventually { session.isClosed })
        gate.post()
        await closing.value
        // The ring's old kick and call eventfds and the new kick's copy are all closed.
        #expect(await fixture.eventually { session.vrings.allSatisfy { $0.kickFD == nil && $0.callFD == nil } })
        let closedAll = await fixture.eventually { Self.openDescriptors(naming: "anon_inode:[eventfd]") <= before - 2 }
        #expect(closedAll, "the session's eventfds are closed (\(Self.openDescriptors(naming: "anon_inode:[eventfd]")) open, \(before) before the new kick)")
        await fixture.tearDown()
    }
}
