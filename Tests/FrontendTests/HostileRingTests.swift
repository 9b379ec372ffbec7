import Foundation
import Testing
import CSpindle
import VhostUser
@testable import VhostUserFrontend

/// A guest that corrupts its own ring, over the daemon's real socket: Spindle must stop that
/// device (signal the frontend's vring error eventfd, log why, close the connection), stay
/// up, keep the export listening for a fresh frontend, and never disturb the other export,
/// whose frontend keeps writing and reading back data on the same IOThread meanwhile.
@Suite(.serialized, .enabled(if: TwoExportDaemon.executable != nil, "spindle is not built"))
struct HostileRingTests {
    enum Corruption: String, CaseIterable, CustomStringConvertible, Sendable {
        case nextLoop, indirectLoop, nestedIndirect, addressOutsideMemory, addressWraps, hugeLength,
             availableIndexJump, headOutOfRange

        var description: String { rawValue }
        var usesIndirect: Bool { self == .indirectLoop || self == .nestedIndirect }

        /// Writes the corruption into the ring (slot 1's descriptors and data area, which the
        /// good request before it did not use) and publishes it.
        func apply(to queue: inout BlkQueue, memory: SharedMemoryRegion) {
            let table = queue.ring.descriptors
            let scratch = queue.data(of: 1)
            func gpa(_ p: UnsafeMutableRawPointer) -> UInt64 { memory.guestPhysicalAddress(of: p) }
            let next = VirtqueueLayout.descriptorFlagNext
            let write = VirtqueueLayout.descriptorFlagWrite
            let indirect = VirtqueueLayout.descriptorFlagIndirect
            let head: UInt16 = usesIndirect ? 1 : 3  // slot 1's head in either layout
            func put(_ index: Int, _ address: UInt64, _ length: UInt32, _ flags: UInt16, _ nextIndex: UInt16 = 0, in t: UnsafeMutableRawPointer? = nil) {
                DriverVirtqueue.writeDescriptor(t ?? table, index, address: address, length: length, flags: flags, next: nextIndex)
            }
            switch self {
            case .nextLoop:
                put(3, gpa(scratch), 16, next, 4)
                put(4, gpa(scratch + 512), 512, next | write, 3)
            case .indirectLoop:
                let inner = scratch + 1024
                put(0, gpa(scratch), 16, next, 1, in: inner)
                put(1, gpa(scratch + 512), 512, next | write, 0, in: inner)
                put(1, gpa(inner), 32, indirect)
            case .nestedIndirect:
                let inner = scratch + 1024
                put(0, gpa(scratch + 2048), 16, indirect, in: inner)
                put(1, gpa(inner), 16, indirect)
            case .addressOutsideMemory:
                put(3, 0x7000_0000_0000, 4096, write)
            case .addressWraps:
                put(3, 0xFFFF_FFFF_FFFF_F000, 0x2000, write)
            case .hugeLength:
                put(3, gpa(scratch), 0xFFFF_FFFF, write)
            case .availableIndexJump:
                let jumped = queue.ring.publishedAvailableIndex &+ queue.ring.size &+ 1
                spindle_store_release_u16(queue.ring.available + 2, jumped.littleEndian)
                return
            case .headOutOfRange:
                queue.ring.pushAvailable(head: queue.ring.size &+ 3)
                _ = queue.ring.publishAvailable()
                return
            }
            queue.ring.pushAvailable(head: head)
            _ = queue.ring.publishAvailable()
        }
    }

    @Test(arguments: Corruption.allCases)
    func corruptRingBreaksOnlyThatDevice(_ corruption: Corruption) throws {
        try corruptRing(corruption, withErrorFD: true)
    }

    /// Without SET_VRING_ERR the connection is still closed.
    @Test(arguments: [Corruption.nextLoop, .availableIndexJump])
    func corruptRingWithoutErrorFDClosesTheConnection(_ corruption: Corruption) throws {
        try corruptRing(corruption, withErrorFD: false)
    }

    func corruptRing(_ corruption: Corruption, withErrorFD: Bool) throws {
        let daemon = try TwoExportDaemon.start()
        defer { daemon.stop() }
        let bystander = try Bystander.running(on: daemon)
        defer { bystander.stop() }

        let victim = try VhostUserBlkFrontend(socketPath: daemon.victimSocket,
                                              options: FrontendOptions(slotsPerQueue: 2, indirectDescriptors: corruption.usesIndirect))
        let errorFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        defer { close(errorFD) }
        if withErrorFD { try victim.setVringErrorFD(queue: 0, fd: errorFD) }
        var queue = victim.queues[0]
        // The ring works until the guest corrupts it.
        #expect(try completeRequest(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)

        corruption.apply(to: &queue, memory: victim.memory)
        queue.kick()
        if withErrorFD {
            #expect(becomesReadable(errorFD, milliseconds: 10_000), "the vring error eventfd was not signalled")
        }
        #expect(victim.waitForBackendFailure(milliseconds: 10_000) == "backend closed the vhost-user connection during the run")
        #expect(daemon.waitForLog("corrupted virtqueue 0"), "no log line names the broken queue: \(daemon.log)")
        #expect(daemon.waitForLog("closing the connection so the frontend resets the device"))

        // The other export kept serving correct data throughout, and still does.
        let rounds = bystander.rounds
        #expect(bystander.waitForRounds(rounds + 3))
        #expect(bystander.failures.isEmpty, "bystander: \(bystander.failures)")
        #expect(daemon.isRunning)

        // The broken export takes a fresh, well-behaved frontend.
        let fresh = try connectWhenFree(daemon.victimSocket)
        var freshQueue = fresh.queues[0]
        #expect(try completeRequest(&freshQueue, slot: 0, type: .read, sector: 8, bytes: 4096) == BlkStatus.ok)
    }

    /// Connects, retrying for 10 s (the export holds a connection made while the broken one is
    /// still being torn down; the retry covers a refusal all the same).
    func connectWhenFree(_ socket: String) throws -> VhostUserBlkFrontend {
        let deadline = Date().addingTimeInterval(10)
        while true {
            do {
                return try VhostUserBlkFrontend(socketPath: socket, options: FrontendOptions(slotsPerQueue: 2, replyTimeoutMilliseconds: 2000))
            } catch {
                guard Date() < deadline else { throw error }
                usleep(50_000)
            }
        }
    }
}
