#if canImport(Glibc)
import Glibc
#endif

/// The frontend's memory table: guest physical / frontend user addresses → host pointers.
///
/// Immutable after construction so IOThreads can use it without locks: when the table
/// changes, the control thread builds a new `GuestMemory` (sharing unchanged mappings) and
/// hands it over; a mapping is unmapped when the last table holding it goes away.
///
/// Every translation is overflow-safe and answers nil unless every byte asked for lies in
/// mapped guest memory, so guest-supplied addresses can be passed straight in.
public final class GuestMemory: @unchecked Sendable {
    /// Most regions one table holds (also a sensible VHOST_USER_GET_MAX_MEM_SLOTS answer).
    public static let maximumRegions = 32

    /// Flat lookup entry; end addresses are exclusive (construction guarantees no wrap).
    @usableFromInline
    struct Entry {
        @usableFromInline let gpaStart: UInt64
        @usableFromInline let gpaEnd: UInt64
        @usableFromInline let uvaStart: UInt64
        @usableFromInline let uvaEnd: UInt64
        @usableFromInline let host: UnsafeMutableRawPointer

        init(_ mapping: GuestMemoryMapping) {
            gpaStart = mapping.region.guestPhysAddr
            gpaEnd = mapping.region.guestPhysAddr + mapping.region.memorySize
            uvaStart = mapping.region.userAddr
            uvaEnd = mapping.region.userAddr + mapping.region.memorySize
            host = mapping.hostAddress
        }
    }

    /// The mappings this table keeps alive, in lookup order.
    public let mappings: [GuestMemoryMapping]
    @usableFromInline let entries: UnsafeMutablePointer<Entry>
    @usableFromInline let entryCount: Int

    /// An empty table: every translation fails.
    public convenience init() {
        // Cannot fail: no regions to validate.
        try! self.init(mappings: [])
    }

    /// Builds a table from mappings, rejecting overlapping guest physical ranges.
    /// (User address ranges may alias: both would name the same frontend memory.)
    public init(mappings: [GuestMemoryMapping]) throws(GuestMemoryError) {
        guard mappings.count <= Self.maximumRegions else {
            throw .tooManyRegions(count: mappings.count, maximum: Self.maximumRegions)
        }
        let byAddress = mappings.sorted { $0.region.guestPhysAddr < $1.region.guestPhysAddr }
        for (a, b) in zip(byAddress, byAddress.dropFirst())
        where a.region.guestPhysAddr + a.region.memorySize > b.region.guestPhysAddr {
            throw .overlappingRegions(a.region, b.region)
        }
        // The table is shared by all IOThreads, so there is no "last hit" cache; instead the
        // largest regions (normally main RAM) come first in the linear scan.
        let ordered = mappings.sorted { $0.region.memorySize > $1.region.memorySize }
        self.mappings = ordered
        entryCount = ordered.count
        entries = .allocate(capacity: max(ordered.count, 1))
        for (i, mapping) in ordered.enumerated() {
            (entries + i).initialize(to: Entry(mapping))
        }
    }

    /// Maps every region (see `GuestMemoryMapping.map`) and builds a table. Takes ownership of
    /// all the fds: each is closed, whether or not everything succeeds.
    public static func map(_ regions: [(region: GuestMemoryRegionDescription, fd: Int32)]) throws(GuestMemoryError) -> GuestMemory {
        var mapped: [GuestMemoryMapping] = []
        mapped.reserveCapacity(regions.count)
        var failure: GuestMemoryError?
        for (region, fd) in regions {
            if failure != nil {
                if fd >= 0 { _ = close(fd) }
                continue
            }
            do throws(GuestMemoryError) {
                mapped.append(try GuestMemoryMapping.map(region, fd: fd))
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return try GuestMemory(mappings: mapped)
    }

    deinit {
        entries.deinitialize(count: entryCount)
        entries.deallocate()
    }

    /// A new table with one more mapping (VHOST_USER_ADD_MEM_REG).
    public func adding(_ mapping: GuestMemoryMapping) throws(GuestMemoryError) -> GuestMemory {
        try GuestMemory(mappings: mappings + [mapping])
    }

    /// A new table without the region matching `region` by gpa, size and uva
    /// (VHOST_USER_REM_MEM_REG), or nil if no region matches.
    public func removing(_ region: GuestMemoryRegionDescription) -> GuestMemory? {
        guard let index = mappings.firstIndex(where: { $0.region.sameRegion(as: region) }) else { return nil }
        var rest = mappings
        rest.remove(at: index)
        // Removing cannot create overlaps or exceed the limit.
        return try! GuestMemory(mappings: rest)
    }

    /// The regions, for logs and for matching.
    public var regions: [GuestMemoryRegionDescription] { mappings.map(\.region) }
    public var regionCount: Int { entryCount }

    // MARK: - Hot path

    @inlinable
    func entryIndex(containingGuestPhysical gpa: UInt64) -> Int? {
        var i = 0
        while i < entryCount {
            if gpa >= entries[i].gpaStart && gpa < entries[i].gpaEnd { return i }
            i += 1
        }
        return nil
    }

    /// Host pointer for `length` bytes at guest physical `gpa`, only if all of them lie in one
    /// region. A zero length succeeds if `gpa` itself is mapped.
    @inlinable
    public func translate(gpa: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        guard let i = entryIndex(containingGuestPhysical: gpa) else { return nil }
        let entry = entries[i]
        guard length <= entry.gpaEnd - gpa else { return nil }
        return entry.host + Int(gpa - entry.gpaStart)
    }

    /// Translates `length` bytes at `gpa` into host spans written to `spans`, one per region
    /// crossed. Returns the span count (0 for a zero length), or nil if any byte is unmapped
    /// or more than `capacity` spans would be needed.
    @inlinable
    public func translateSpans(gpa: UInt64, length: UInt64, into spans: UnsafeMutablePointer<iovec>, capacity: Int) -> Int? {
        var address = gpa
        var remaining = length
        var count = 0
        while remaining > 0 {
            guard count < capacity, let i = entryIndex(containingGuestPhysical: address) else { return nil }
            let entry = entries[i]
            let chunk = min(remaining, entry.gpaEnd - address)
            spans[count] = iovec(iov_base: entry.host + Int(address - entry.gpaStart), iov_len: Int(chunk))
            count += 1
            remaining -= chunk
            // Cannot wrap: address + chunk <= gpaEnd, which fits in UInt64.
            address += chunk
        }
        return count
    }

    /// Whether every byte of [gpa, gpa + length) is mapped (possibly across regions).
    @inlinable
    public func contains(gpa: UInt64, length: UInt64) -> Bool {
        var address = gpa
        var remaining = length
        while remaining > 0 {
            guard let i = entryIndex(containingGuestPhysical: address) else { return false }
            let chunk = min(remaining, entries[i].gpaEnd - address)
            remaining -= chunk
            address += chunk
        }
        return true
    }

    /// Host pointer for `length` bytes at frontend user address `uva` (ring addresses in
    /// SET_VRING_ADDR), only if all of them lie in one region.
    @inlinable
    public func translateUserAddress(_ uva: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        var i = 0
        while i < entryCount {
            let entry = entries[i]
            if uva >= entry.uvaStart && uva < entry.uvaEnd {
                guard length <= entry.uvaEnd - uva else { return nil }
                return entry.host + Int(uva - entry.uvaStart)
            }
            i += 1
        }
        return nil
    }

    /// The guest physical address of a host pointer into this table, if it is in one.
    /// (Diagnostics and tests; linear, not for the hot path.)
    public func guestPhysicalAddress(of pointer: UnsafeRawPointer) -> UInt64? {
        let p = UInt(bitPattern: pointer)
        for i in 0..<entryCount {
            let base = UInt(bitPattern: entries[i].host)
            if p >= base && UInt64(p - base) < entries[i].gpaEnd - entries[i].gpaStart {
                return entries[i].gpaStart + UInt64(p - base)
            }
        }
        return nil
    }
}
