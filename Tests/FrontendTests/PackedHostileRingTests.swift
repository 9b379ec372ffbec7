import Foundation
import Testing
import CSpindle
import VhostUser
@testable import VhostUserFrontend

/// A guest that corrupts its own packed ring, over Spindle's real socket (export with
/// packed-ring=on): the daemon must stop that device (vring error eventfd, a log line naming
/// the queue, connection closed), stay up, and keep the other export (split ring, same
/// IOThread) serving correct data meanwhile.
@Suite(.serialized, .enabled(if: TwoExportDaemon.executable != nil, "spindle is not built"))
struct PackedHostileRingTests {
    enum Corruption: String, CaseIterable, CustomStringConvertible, Sendable {
        case idOutOfRange, idReusedWhileInFlight, addressOutsideMemory, nestedIndirect

        var description: String { rawValue }
        var usesIndirect: Bool { self == .nestedIndirect }

        /// What the daemon's log must say about it.
        var logText: String {
            switch self {
            case .idOutOfRange: return "is not below the queue size"
            case .idReusedWhileInFlight: return "made available again while still in flight"
            case .addressOutsideMemory: return "is outside guest memory"
            case .nestedIndirect: return "indirect descriptor inside an indirect table"
            }
        }

        /// Writes the corruption at the ring's next positions, bypassing the driver's own
        /// bookkeeping (the queue is not used afterwards). Scratch space: slot 1's data.
        func apply(to queue: inout BlkQueue, memory: SharedMemoryRegion) {
            let ring = queue.packedRing!
            let scratch = queue.data(of: 1)
            func gpa(_ p: UnsafeMutableRawPointer) -> UInt64 { memory.guestPhysicalAddress(of: p) }
            let next = VirtqueueLayout.descriptorFlagNext
            let write = VirtqueueLayout.descriptorFlagWrite
            var position = Int(ring.availablePosition)
            var wrap = ring.availableWrap
            // Each descriptor with its AVAIL/USED bits; heads are written like the rest, in order.
            func put(_ address: UInt64, _ length: UInt32, _ flags: UInt16, id: UInt16) {
                let entry = ring.descriptors + 16 * position
                entry.storeBytes(of: address.littleEndian, as: UInt64.self)
                entry.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
                entry.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
                let full = flags | PackedVirtqueueLayout.availableFlags(wrap: wrap)
                spindle_store_release_u16(entry + 14, full.littleEndian)
                position += 1
                if position == Int(ring.size) { position = 0; wrap.toggle() }
            }
            // A well-formed read request (header, 4 KiB data, status) with buffer id `id`.
            func request(id: UInt16, at offset: Int) {
                let header = scratch + offset
                header.storeBytes(of: BlkRequestType.read.rawValue.littleEndian, as: UInt32.self)
                header.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
                header.storeBytes(of: UInt64(0), toByteOffset: 8, as: UInt64.self)
                put(gpa(header), 16, next, id: id)
                put(gpa(scratch + 4096), 512, next | write, id: id)
                put(gpa(header + 16), 1, write, id: id)
            }
            switch self {
            case .idOutOfRange:
                request(id: ring.size &+ 100, at: 0)
            case .idReusedWhileInFlight:
                request(id: 0, at: 0)
                request(id: 0, at: 64)
            case .addressOutsideMemory:
                put(0x7000_0000_0000, 16, next, id: 1)
                put(gpa(scratch + 16), 1, write, id: 1)
            case .nestedIndirect:
                let inner = scratch + 1024
                BlkQueue.writePackedTableEntry(inner, 0, address: gpa(scratch + 2048), length: 16,
                                               flags: VirtqueueLayout.descriptorFlagIndirect)
                put(gpa(inner), 16, VirtqueueLayout.descriptorFlagIndirect, id: 1)
            }
        }
    }

    @Test(arguments: Corruption.allCases)
    func corruptPackedRingBreaksOnlyThatDevice(_ corruption: Corruption) throws {
        // The reused id needs its first use still in flight: hold the victim's completions.
        let daemon = try TwoExportDaemon.start(victimKeys: ",packed-ring=on",
                                               holdVictimMilliseconds: corruption == .idReusedWhileInFlight ? 1000 : nil)
        defer { daemon.stop() }
        let bystander = try Bystander.running(on: daemon)
        defer { bystander.stop() }

        var options = FrontendOptions(slotsPerQueue: 2, indirectDescriptors: corruption.usesIndirect)
        options.ringLayout = .packed
        let victim = try VhostUserBlkFrontend(socketPath: daemon.victimSocket, options: options)
        let errorFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        defer { close(errorFD) }
        try victim.setVringErrorFD(queue: 0, fd: errorFD)
        var queue = victim.queues[0]
        // The ring works until the guest corrupts it.
        #expect(try completePacked(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)

        corruption.apply(to: &queue, memory: victim.memory)
        queue.kick()
        #expect(becomesReadable(errorFD, milliseconds: 10_000), "the vring error eventfd was not signalled")
        #expect(victim.waitForBackendFailure(milliseconds: 10_000) == "backend closed the vhost-user connection during the run")
        #expect(daemon.waitForLog("corrupted virtqueue 0"), "no log line names the broken queue: \(daemon.log)")
        #expect(daemon.waitForLog(corruption.logText), "the log does not say why: \(daemon.log)")

        // The other export kept serving correct data throughout, and still does.
        let rounds = bystander.rounds
        #expect(bystander.waitForRounds(rounds + 3))
        #expect(bystander.failures.isEmpty, "bystander: \(bystander.failures)")
        #expect(daemon.isRunning)
    }
}
