import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// The frontend's dirty log without a backend: sizes as QEMU computes them, the bit layout a
/// backend writes (simulated through a second mapping of the memfd), harvesting, and the
/// features and ring addresses the frontend asks for.
@Suite struct FrontendDirtyLogTests {
    @Test func sizedLikeQEMU() throws {
        // One chunk covers 256 KiB; the log reaches the chunk of the last byte.
        #expect(FrontendDirtyLog.chunkCount(coveringUpTo: 1) == 1)
        #expect(FrontendDirtyLog.chunkCount(coveringUpTo: 256 << 10) == 1)
        #expect(FrontendDirtyLog.chunkCount(coveringUpTo: (256 << 10) + 1) == 2)
        let end = SharedMemoryRegion.guestPhysicalBase + (2 << 20)
        #expect(FrontendDirtyLog.chunkCount(coveringUpTo: end) == 16384 + 8)
        let log = try FrontendDirtyLog(coveringUpTo: end)
        #expect(log.mmapSize == UInt64(16392 * 8))
        #expect(log.logDescription == VhostUserLogDescription(mmapSize: 16392 * 8, mmapOffset: 0))
        var status = stat()
        #expect(fstat(log.fd, &status) == 0)
        #expect(UInt64(status.st_size) == log.mmapSize)
        // Sealed as QEMU seals it: the backend cannot grow or shrink what both map.
        let seals = fcntl(log.fd, F_GET_SEALS)
        #expect(seals & (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) == F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)
    }

    @Test func pageArithmetic() {
        #expect(FrontendDirtyLog.pages(of: 0x1_0000_0000, length: 4096) == 0x10_0000...0x10_0000)
        #expect(FrontendDirtyLog.pages(of: 0x1_0000_0fff, length: 2) == 0x10_0000...0x10_0001)
        #expect(FrontendDirtyLog.pages(of: 0x1_0000_0010, length: 1) == 0x10_0000...0x10_0000)
        #expect(FrontendDirtyLog.pages(of: 0x1_0000_0000, length: 0) == nil)
    }

    @Test func harvestTakesWhatTheBackendMarkedAndClearsIt() throws {
        let log = try FrontendDirtyLog(coveringUpTo: SharedMemoryRegion.guestPhysicalBase + (2 << 20))
        // The backend's view: its own shared mapping of the memfd, marked byte-wise
        // (log[page / 8] |= 1 << page % 8), as libvhost-user and Spindle do.
        let size = Int(log.mmapSize)
        guard let backend = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, log.fd, 0), backend != MAP_FAILED else {
            Issue.record("cannot map the log a second time: errno \(errno)")
            return
        }
        defer { munmap(backend, size) }
        let pages: [UInt64] = [0, 7, 8, 63, 64, 0x10_0000, 0x10_0001, 0x10_01ff]
        for page in pages.reversed() {
            let byte = backend.advanced(by: Int(page / 8)).assumingMemoryBound(to: UInt8.self)
            byte.pointee |= 1 << (page % 8)
        }
        #expect(log.dirtyPages() == pages)
        #expect(log.dirtyPages() == pages, "peeking does not clear")
        #expect(log.harvestPages() == pages)
        #expect(log.harvestPages().isEmpty)
        #expect(backend.load(fromByteOffset: 0x10_0000 / 8, as: UInt8.self) == 0, "the backend's mapping is cleared too")
        backend.storeBytes(of: 0x81, toByteOffset: 1, as: UInt8.self)
        #expect(log.harvest() == 2)
        #expect(log.harvest() == 0)
    }

    @Test func loggingNeedsLogAllOffered() throws {
        let version1 = FeatureNegotiation.bit(VirtioFeatureBit.version1)
        var options = FrontendOptions(eventIndex: false)
        options.dirtyLogging = .onRequest
        #expect(throws: FrontendError.self) { try FeatureNegotiation.deviceFeatures(offered: version1, options: options) }
        // Offered is enough; LOG_ALL is not acked in the initial SET_FEATURES (only while logging).
        let features = try FeatureNegotiation.deviceFeatures(offered: version1 | VhostUserFeatureBits.logAll, options: options)
        #expect(features == version1)
        let offered: VhostUserProtocolFeatures = [.mq, .replyAck, .logSHMFD]
        #expect(FeatureNegotiation.protocolFeatures(offered: offered.rawValue) == [.mq, .replyAck])
        #expect(FeatureNegotiation.protocolFeatures(offered: offered.rawValue, dirtyLogging: true) == [.mq, .replyAck, .logSHMFD])
    }

    @Test func ringAddressCarriesTheUsedRingsGuestAddressWhenLogging() throws {
        let memory = try SharedMemoryRegion(size: 1 << 20)
        let layout = QueueMemoryLayout(queueSize: 64, slotCount: 4, maxRequestBytes: 4096)
        let queue = try BlkQueue(index: 2, layout: layout, memory: memory, eventIndex: true, indirect: false,
                                 maxRequestBytes: 4096, kickFD: -1, callFD: -1)
        let on = VhostUserBlkFrontend.vringAddress(of: queue, memory: memory, logging: true)
        #expect(on.index == 2)
        #expect(on.flags == VhostUserVringAddress.flagLog)
        #expect(on.logGuestAddr == memory.guestPhysicalAddress(of: queue.ring.used))
        #expect(on.usedUserAddr == memory.userAddress(of: queue.ring.used))
        let off = VhostUserBlkFrontend.vringAddress(of: queue, memory: memory, logging: false)
        #expect(off.flags == 0 && off.logGuestAddr == 0)
        #expect(off.descUserAddr == on.descUserAddr && off.availUserAddr == on.availUserAddr && off.usedUserAddr == on.usedUserAddr)
    }
}
