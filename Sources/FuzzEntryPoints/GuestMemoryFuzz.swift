#if canImport(Glibc)
import Glibc
#endif
import CSpindle
import VhostUser

/// Input: byte 0 = fds sent along (0–9), byte 1 = payload length in 32-byte regions past the
/// 8-byte header (0–9), then the SET_MEM_TABLE payload, then (address, length) queries.
/// The table is decoded like a frontend message and built over fake host addresses (never
/// dereferenced), then every translation is compared with a plain reference model.
func fuzzGuestMemory(_ input: UnsafeRawBufferPointer) {
    var bytes = FuzzBytes(input)
    let fdCount = Int(bytes.u8() % 10)
    let payloadRegions = Int(bytes.u8() % 10)
    let payload = [UInt8](bytes.take(VhostUserMemoryTable.headerSize + payloadRegions * MemoryRegionDescription.wireSize))
    var fds: [Int32] = []
    for _ in 0..<fdCount { fds.append(eventfd(0, Int32(EFD_CLOEXEC))) }
    let message = VhostUserMessage(request: VhostUserRequestCode.setMemTable.rawValue, flags: .version1,
                                   payload: payload, fds: fds)
    guard let request = try? VhostUserRequest.decode(message) else { return }
    request.closeFileDescriptors()
    guard case .setMemTable(let described) = request else { return }
    let regions = described.map(\.region)

    var bases: [UnsafeMutableRawPointer] = []
    var mappings: [GuestMemoryMapping] = []
    for (i, region) in regions.enumerated() {
        let base = UnsafeMutableRawPointer(bitPattern: UInt(0x1000_0000) + UInt(i) << 40)!
        guard let mapping = try? GuestMemoryMapping.unowned(region, hostAddress: base) else { return }
        bases.append(base)
        mappings.append(mapping)
    }
    guard let memory = try? GuestMemory(mappings: mappings) else {
        return
    }
    precondition(memory.regionCount == regions.count)

    let spanCapacity = 4
    let spans = UnsafeMutablePointer<iovec>.allocate(capacity: spanCapacity)
    defer { spans.deallocate() }
    var queries = 0
    while !bytes.isAtEnd && queries < 64 {
        queries += 1
        // Queries relative to a region (and sometimes raw) reach the interesting edges.
        let selector = bytes.u8()
        var address = bytes.u64()
        let length = bytes.u64()
        if !regions.isEmpty && selector & 0x80 == 0 {
            let region = regions[Int(selector) % regions.count]
            address = (selector & 0x40 == 0 ? region.guestPhysAddr : region.userAddr) &+ address % (region.memorySize &+ 2)
        }
        let model = ReferenceTable(regions: regions, bases: bases)
        check(memory, model, gpa: address, length: length, spans: spans, capacity: spanCapacity)
    }
}

/// What a translation should answer, computed the slow and obvious way.
private struct ReferenceTable {
    let regions: [MemoryRegionDescription]
    let bases: [UnsafeMutableRawPointer]

    func regionIndex(gpa: UInt64) -> Int? {
        regions.indices.first { gpa >= regions[$0].guestPhysAddr && gpa - regions[$0].guestPhysAddr < regions[$0].memorySize }
    }

    func translate(gpa: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        guard let i = regionIndex(gpa: gpa) else { return nil }
        let offset = gpa - regions[i].guestPhysAddr
        guard length <= regions[i].memorySize - offset else { return nil }
        return bases[i] + Int(offset)
    }

    /// Spans needed for [gpa, gpa+length), or nil if some byte is unmapped.
    func spanCount(gpa: UInt64, length: UInt64) -> Int? {
        var address = gpa
        var remaining = length
        var count = 0
        while remaining > 0 {
            guard let i = regionIndex(gpa: address) else { return nil }
            let chunk = min(remaining, regions[i].memorySize - (address - regions[i].guestPhysAddr))
            remaining -= chunk
            address &+= chunk
            count += 1
        }
        return count
    }
}

private func check(_ memory: GuestMemory, _ model: ReferenceTable, gpa: UInt64, length: UInt64,
                   spans: UnsafeMutablePointer<iovec>, capacity: Int) {
    precondition(memory.translate(gpa: gpa, length: length) == model.translate(gpa: gpa, length: length),
                 "translate(gpa: \(gpa), length: \(length)) disagrees with the reference")
    let expectedSpans = model.spanCount(gpa: gpa, length: length)
    precondition(memory.contains(gpa: gpa, length: length) == (expectedSpans != nil),
                 "contains(gpa: \(gpa), length: \(length)) disagrees with the reference")
    let count = memory.translateSpans(gpa: gpa, length: length, into: spans, capacity: capacity)
    if let expectedSpans, expectedSpans <= capacity {
        precondition(count == expectedSpans, "translateSpans gave \(String(describing: count)) spans, expected \(expectedSpans)")
        var total: UInt64 = 0
        var address = gpa
        for i in 0..<count! {
            precondition(UnsafeMutableRawPointer(spans[i].iov_base) == model.translate(gpa: address, length: UInt64(spans[i].iov_len)),
                         "span \(i) points to the wrong place")
            total += UInt64(spans[i].iov_len)
            address &+= UInt64(spans[i].iov_len)
        }
        precondition(total == length, "spans cover \(total) bytes, not \(length)")
    } else {
        precondition(count == nil, "translateSpans succeeded where it must fail")
    }

    // User addresses may alias between regions: whatever answer comes must be right.
    if let pointer = memory.translateUserAddress(gpa, length: length) {
        let ok = model.regions.indices.contains { i in
            let r = model.regions[i]
            return gpa >= r.userAddr && gpa - r.userAddr < r.memorySize && length <= r.memorySize - (gpa - r.userAddr)
                && pointer == model.bases[i] + Int(gpa - r.userAddr)
        }
        precondition(ok, "translateUserAddress(\(gpa), length: \(length)) points outside every region")
    } else {
        // Without aliasing the answer is unambiguous: the one region holding it must not fit.
        let holders = model.regions.filter { r in gpa >= r.userAddr && gpa - r.userAddr < r.memorySize }
        let explained = holders.count != 1 || length > holders[0].memorySize - (gpa - holders[0].userAddr)
        precondition(explained, "translateUserAddress failed for a mapped range")
    }
}
