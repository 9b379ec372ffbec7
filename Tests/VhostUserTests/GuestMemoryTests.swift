#if canImport(Glibc)
import Glibc
#endif
import SpindleTestSupport
import Testing
@testable import VhostUser

@Suite struct GuestMemoryTests {
    func region(_ gpa: UInt64, _ size: UInt64, uva: UInt64 = 0x1000_0000, offset: UInt64 = 0) -> GuestMemoryRegionDescription {
        GuestMemoryRegionDescription(guestPhysAddr: gpa, memorySize: size, userAddr: uva, mmapOffset: offset)
    }

    @Test func translateInsideOneRegion() {
        let guest = MockSplitQueue()
        let a = guest.memory.translate(gpa: 0x100, length: 0x100)
        #expect(a != nil)
        #expect(guest.memory.guestPhysicalAddress(of: a!) == 0x100)
        #expect(guest.memory.translate(gpa: 0xFFFF, length: 1) != nil)
        // Crossing from A into B is two regions: not one pointer.
        #expect(guest.memory.translate(gpa: 0xFFFF, length: 2) == nil)
        #expect(guest.memory.translate(gpa: 0x20000, length: 1) == nil)
        #expect(guest.memory.translate(gpa: UInt64.max, length: 1) == nil)
        #expect(guest.memory.translate(gpa: 0x100, length: UInt64.max) == nil)
    }

    @Test func translateUserAddresses() {
        let guest = MockSplitQueue()
        let bias = MockSplitQueue.separateUVABias
        #expect(guest.memory.translateUserAddress(bias + 0x100, length: 16) == guest.memory.translate(gpa: 0x100, length: 16))
        #expect(guest.memory.translateUserAddress(0x100, length: 16) == nil)
        #expect(guest.memory.translateUserAddress(bias + 0x10FFF8, length: 8) != nil)
        #expect(guest.memory.translateUserAddress(bias + 0x10FFF8, length: 9) == nil)
    }

    @Test func spansAcrossAdjacentRegions() {
        let guest = MockSplitQueue()
        let spans = UnsafeMutablePointer<iovec>.allocate(capacity: 4)
        defer { spans.deallocate() }
        let n = guest.memory.translateSpans(gpa: 0xFF00, length: 0x200, into: spans, capacity: 4)
        #expect(n == 2)
        #expect(spans[0].iov_base == guest.memory.translate(gpa: 0xFF00, length: 0x100))
        #expect(spans[0].iov_len == 0x100)
        #expect(spans[1].iov_base == guest.memory.translate(gpa: 0x10000, length: 0x100))
        #expect(spans[1].iov_len == 0x100)
        // Capacity too small, a gap, zero length, wrap-around.
        #expect(guest.memory.translateSpans(gpa: 0xFF00, length: 0x200, into: spans, capacity: 1) == nil)
        #expect(guest.memory.translateSpans(gpa: 0x1FF00, length: 0x200, into: spans, capacity: 4) == nil)
        #expect(guest.memory.translateSpans(gpa: 0x50000, length: 0, into: spans, capacity: 0) == 0)
        #expect(guest.memory.translateSpans(gpa: UInt64.max - 4, length: 16, into: spans, capacity: 4) == nil)
        #expect(guest.memory.contains(gpa: 0xFF00, length: 0x200))
        #expect(!guest.memory.contains(gpa: 0x1FF00, length: 0x200))
    }

    @Test func rejectsBadTables() throws {
        let p = UnsafeMutableRawPointer.allocate(byteCount: 0x2000, alignment: 4096)
        defer { p.deallocate() }
        #expect(throws: GuestMemoryError.zeroSize(region(0, 0))) {
            try GuestMemoryMapping.unowned(region(0, 0), hostAddress: p)
        }
        #expect(throws: GuestMemoryError.addressOverflow(region(UInt64.max - 0xFFF, 0x1000))) {
            try GuestMemoryMapping.unowned(region(UInt64.max - 0xFFF, 0x1000), hostAddress: p)
        }
        #expect(throws: GuestMemoryError.addressOverflow(region(0, 0x1000, uva: UInt64.max))) {
            try GuestMemoryMapping.unowned(region(0, 0x1000, uva: UInt64.max), hostAddress: p)
        }
        let a = try GuestMemoryMapping.unowned(region(0, 0x1000), hostAddress: p)
        let b = try GuestMemoryMapping.unowned(region(0xFFF, 0x1000), hostAddress: p + 0x1000)
        #expect(throws: GuestMemoryError.overlappingRegions(a.region, b.region)) {
            try GuestMemory(mappings: [b, a])
        }
        let many = try (0..<33).map { i throws(GuestMemoryError) in
            try GuestMemoryMapping.unowned(region(UInt64(i) * 0x1000, 0x1000), hostAddress: p)
        }
        #expect(throws: GuestMemoryError.tooManyRegions(count: 33, maximum: 32)) {
            try GuestMemory(mappings: many)
        }
        // The last byte of the address space can be covered, but not wrapped past.
        _ = try GuestMemoryMapping.unowned(region(UInt64.max - 0x1000, 0x1000), hostAddress: p)
    }

    @Test func addAndRemoveRegions() throws {
        let guest = MockSplitQueue()
        let p = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 4096)
        defer { p.deallocate() }
        let extra = try GuestMemoryMapping.unowned(region(0x200000, 0x1000), hostAddress: p)
        let bigger = try guest.memory.adding(extra)
        #expect(bigger.regionCount == 4)
        #expect(bigger.translate(gpa: 0x200000, length: 0x1000) == p)
        #expect(guest.memory.translate(gpa: 0x200000, length: 1) == nil)
        var match = extra.region
        match.mmapOffset = 0x1234  // not compared
        let smaller = bigger.removing(match)
        #expect(smaller?.regionCount == 3)
        #expect(smaller?.translate(gpa: 0x200000, length: 1) == nil)
        #expect(bigger.removing(region(0x300000, 0x1000)) == nil)
        let overlapping = try GuestMemoryMapping.unowned(region(0x8000, 0x1000), hostAddress: p)
        #expect(throws: GuestMemoryError.self) { try guest.memory.adding(overlapping) }
    }

    /// Whether `fd` was closed. Tests run in parallel and another may reuse the number at
    /// once, so a valid `fd` only counts as open if it is still the file `reference` is.
    func isClosed(_ fd: Int32, wasSameFileAs reference: Int32) -> Bool {
        var expected = stat(), now = stat()
        guard fstat(reference, &expected) == 0 else { return false }
        return fcntl(fd, F_GETFD) == -1 || (fstat(fd, &now) == 0 && (now.st_ino != expected.st_ino || now.st_dev != expected.st_dev))
    }

    @Test func mapsMemfdAtOffsetAndClosesFd() throws {
        let fd = memfd_create("spindle-test", 0)
        try #require(fd >= 0)
        try #require(ftruncate(fd, 0x3000) == 0)
        let check = dup(fd)
        defer { close(check) }
        let description = GuestMemoryRegionDescription(guestPhysAddr: 0x4000_0000, memorySize: 0x2000,
                                                       userAddr: 0x7000_0000, mmapOffset: 0x1000)
        let memory = try GuestMemory.map([(region: description, fd: fd)])
        #expect(isClosed(fd, wasSameFileAs: check))  // closed by map
        let p = try #require(memory.translate(gpa: 0x4000_0000, length: 0x2000))
        p.storeBytes(of: 0xAB, as: UInt8.self)
        var byte: UInt8 = 0
        #expect(pread(check, &byte, 1, 0x1000) == 1)
        #expect(byte == 0xAB)
        #expect(memory.regions == [description])
    }

    @Test func mmapFailureIsAnErrorWithAMessage() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        defer { close(fds[1]) }
        let description = region(0, 0x1000)
        do {
            _ = try GuestMemory.map([(region: description, fd: fds[0])])
            Issue.record("mapping a pipe should fail")
        } catch {
            guard case .mmapFailed(let r, _) = error else { Issue.record("unexpected \(error)"); return }
            #expect(r == description)
            #expect(error.description.contains("mmap failed"))
        }
        #expect(isClosed(fds[0], wasSameFileAs: fds[1]))  // both pipe ends share one inode
        #expect(throws: GuestMemoryError.invalidFileDescriptor(description)) {
            try GuestMemory.map([(region: description, fd: -1)])
        }
    }

    /// A region reaching past its file's end would SIGBUS the daemon on access: refused.
    @Test func refusesARegionBeyondTheEndOfItsFile() throws {
        let fd = memfd_create("spindle-test", 0)
        try #require(fd >= 0)
        try #require(ftruncate(fd, 0x1000) == 0)
        let description = GuestMemoryRegionDescription(guestPhysAddr: 0, memorySize: 0x2000,
                                                       userAddr: 0x7000_0000, mmapOffset: 0)
        #expect(throws: GuestMemoryError.fileTooShort(description, fileSize: 0x1000)) {
            try GuestMemory.map([(region: description, fd: fd)])
        }
    }

    /// A sealable memfd is sealed against shrinking, so the frontend cannot truncate guest
    /// memory under the daemon later.
    @Test func sealsASealableMemfdAgainstShrinking() throws {
        let fd = memfd_create("spindle-test", UInt32(MFD_ALLOW_SEALING))
        try #require(fd >= 0)
        try #require(ftruncate(fd, 0x2000) == 0)
        let check = dup(fd)
        defer { close(check) }
        let memory = try GuestMemory.map([(region: region(0, 0x2000), fd: fd)])
        #expect(fcntl(check, F_GET_SEALS) & F_SEAL_SHRINK != 0)
        #expect(ftruncate(check, 0x1000) == -1)  // the frontend's shrink now fails
        withExtendedLifetime(memory) {}
    }
}
