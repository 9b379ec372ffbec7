#if canImport(Glibc)
import Glibc
#endif
import SpindleTestSupport
import Testing
@testable import VhostUser

/// The packed inflight region on a fake guest's packed ring: the spec's layout, the publish
/// order, and recovery by a "new process" (a fresh ring from the frontend's stale base and a
/// fresh tracker over the same buffer) after a crash at various points, across wraps.
@Suite struct PackedInflightTrackerTests {
    static let data: UInt64 = 0x10000

    static func buffer(queues: Int = 1, size: Int) throws -> InflightBuffer {
        let (fd, description) = try InflightBuffer.allocate(queues: queues, queueSize: size)
        defer { close(fd) }
        return try InflightBuffer(fd: fd, description: description, maxQueues: queues)
    }

    static func header16(_ buffer: InflightBuffer, _ offset: Int) -> UInt16 {
        buffer.base.load(fromByteOffset: offset, as: UInt16.self)
    }

    static func state(_ buffer: InflightBuffer, _ entry: Int) -> UnsafeMutableRawPointer {
        buffer.base + 32 + 32 * entry
    }

    /// Offers a buffer of `descriptors` ring descriptors (the last writable) for `id`.
    static func offer(_ driver: MockPackedQueue, id: UInt16, descriptors: Int) {
        let at = data + UInt64(id) * 0x1000
        driver.offer((0..<descriptors).map { (at + UInt64($0) * 0x100, UInt32(0x100), $0 == descriptors - 1) }, id: id)
    }

    @Test func buffersSizedForEitherLayout() throws {
        #expect(InflightLayout.queueRegionBytes(queueSize: 16) == 576)  // packed: 32 + 32 × 16, rounded to 64
        let buffer = try Self.buffer(size: 16)
        #expect(buffer.holdsPackedRegions && buffer.regionStride == 576)
        // A split-only buffer (an older Spindle's) is accepted, not for packed queues.
        let splitBytes = InflightLayout.splitRegionBytes(queueSize: 16)
        let fd = memfd_create("split-only", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        defer { close(fd) }
        #expect(ftruncate(fd, off_t(splitBytes)) == 0)
        let old = try InflightBuffer(fd: fd, description: .init(mmapSize: UInt64(splitBytes), mmapOffset: 0, numQueues: 1, queueSize: 16),
                                     maxQueues: 1)
        #expect(!old.holdsPackedRegions)
        let driver = MockPackedQueue(size: 16)
        var ring = try driver.queue()
        #expect(throws: InflightError.self) { try PackedInflightTracker(buffer: old, queue: 0, ring: &ring) }
    }

    @Test func freshRegionFollowsTheSpecsLayoutAndOrder() throws {
        let driver = MockPackedQueue(size: 8)
        let buffer = try Self.buffer(size: 8)
        var ring = try driver.queue()
        let tracker = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
        #expect(Self.header16(buffer, 8) == 1 && Self.header16(buffer, 10) == 8)  // version, desc_num
        #expect(buffer.base.load(fromByteOffset: 20, as: UInt8.self) == 1)       // used_wrap_counter
        Self.offer(driver, id: 5, descriptors: 3)
        Self.offer(driver, id: 2, descriptors: 1)
        #expect(try tracker.nextID(from: &ring) == 5)
        #expect(try tracker.nextID(from: &ring) == 2)
        // Entries 0-2 hold id 5's three descriptors, entry 3 id 2's.
        let head5 = Self.state(buffer, 0)
        #expect(head5.load(as: UInt8.self) == 1)
        #expect(head5.load(fromByteOffset: 6, as: UInt16.self) == 3)   // num
        #expect(head5.load(fromByteOffset: 4, as: UInt16.self) == 2)   // last
        #expect(Self.state(buffer, 2).load(fromByteOffset: 16, as: UInt16.self) == 5)  // id in the last descriptor
        #expect(Self.state(buffer, 1).load(fromByteOffset: 24, as: UInt64.self) == Self.data + 5 * 0x1000 + 0x100)
        #expect(Self.state(buffer, 3).load(as: UInt8.self) == 1)
        #expect(Self.state(buffer, 3).load(fromByteOffset: 8, as: UInt64.self) > head5.load(fromByteOffset: 8, as: UInt64.self))
        #expect(Self.header16(buffer, 12) == 4 && Self.header16(buffer, 14) == 4)  // free_head, old_free_head
        // Completed out of order in one batch; marks stay until published.
        ring.addUsed(head: 2, writtenLength: 1)
        ring.addUsed(head: 5, writtenLength: 1)
        #expect(Self.state(buffer, 3).load(as: UInt8.self) == 1)
        tracker.publishUsed(&ring)
        #expect(driver.takeUsed()?.id == 2 && driver.takeUsed()?.id == 5)
        #expect(head5.load(as: UInt8.self) == 0 && Self.state(buffer, 3).load(as: UInt8.self) == 0)
        #expect(Self.header16(buffer, 16) == 4 && Self.header16(buffer, 18) == 4)  // used_idx, old_used_idx
        #expect(Self.header16(buffer, 12) == 0 && Self.header16(buffer, 14) == 0)  // id 5's chain back on top
    }

    /// The driver's view after the crash: completions over both processes, each id once.
    static func drain(_ driver: MockPackedQueue) -> [UInt16] {
        var ids: [UInt16] = []
        while let used = driver.takeUsed() { ids.append(used.id) }
        return ids
    }

    /// SIGKILL with requests in flight across a wrap of the ring, some completed and
    /// published, some completed but not published: the new process resubmits exactly the
    /// unpublished ones, in the order they were taken, from their copies (their ring slots
    /// now hold used descriptors), continues used descriptors where the batch ended and
    /// takes new buffers after the slots of the resubmitted ones, though the frontend sent the
    /// initial base.
    @Test(arguments: [0, 3, 6, 13])
    func newProcessResubmitsFromCopiesAcrossWraps(warmUp: Int) throws {
        let driver = MockPackedQueue(size: 8)
        let buffer = try Self.buffer(size: 8)
        var completed: [UInt16] = []
        do {
            var ring = try driver.queue()
            let first = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
            // Some laps first, so the crash happens at another place and wrap counter.
            for round in 0..<warmUp {
                let id = UInt16(round % 8)
                Self.offer(driver, id: id, descriptors: 1 + round % 3)
                #expect(try first.nextID(from: &ring) == id)
                ring.addUsed(head: id, writtenLength: 0)
                first.publishUsed(&ring)
                completed += Self.drain(driver)
            }
            Self.offer(driver, id: 1, descriptors: 2)
            Self.offer(driver, id: 4, descriptors: 1)
            Self.offer(driver, id: 6, descriptors: 3)
            Self.offer(driver, id: 0, descriptors: 1)
            for _ in 0..<4 { _ = try #require(try first.nextID(from: &ring)) }
            ring.addUsed(head: 6, writtenLength: 7)   // overwrites id 1's slot with a used descriptor
            first.publishUsed(&ring)
            ring.addUsed(head: 0, writtenLength: 7)   // completed, never published
            completed += Self.drain(driver)
            Self.offer(driver, id: 3, descriptors: 1)  // the driver queued more meanwhile
        }
        #expect(completed.suffix(1) == [6])
        // QEMU sends back the base it last knew: the initial one.
        var ring = try PackedVirtqueue(memory: driver.memory, size: 8, addresses: driver.addresses, features: [])
        let second = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
        #expect(second.recoveredCount == 3)
        #expect(UInt16(driver.nextUsed) == ring.base.usedPosition && driver.usedWrap == ring.base.usedWrap)
        let chain = DescriptorChain(capacity: 8)
        var taken: [UInt16] = []
        while let id = try second.nextID(from: &ring) {
            try ring.readChain(head: id, into: chain)
            let descriptors = driver.descriptorsOfID[id] ?? 0
            #expect(chain.readableSpanCount + chain.writableSpanCount == descriptors)
            #expect(chain.spanList(driver.guest, writable: true) == [Self.data + UInt64(id) * 0x1000 + UInt64(descriptors - 1) * 0x100])
            taken.append(id)
        }
        #expect(taken == [1, 4, 0, 3])
        for id in taken.reversed() { ring.addUsed(head: id, writtenLength: 1) }
        second.publishUsed(&ring)
        let after = Self.drain(driver)
        #expect(Set(after) == [1, 4, 0, 3] && after.count == 4)
        #expect(driver.descriptorsOfID.isEmpty, "every buffer came back exactly once")
        #expect(ring.base == PackedVringBase(availablePosition: UInt16(driver.nextAvailable), availableWrap: driver.availableWrap,
                                             usedPosition: UInt16(driver.nextUsed), usedWrap: driver.usedWrap))
        // And the recovered ring goes on: a third process finds nothing in flight.
        var third = try PackedVirtqueue(memory: driver.memory, size: 8, addresses: driver.addresses, features: [])
        #expect(try PackedInflightTracker(buffer: buffer, queue: 0, ring: &third).recoveredCount == 0)
        #expect(third.base == ring.base)
    }

    /// A crash inside publishUsed: before the batch's first flags reached the ring the batch
    /// is rolled back (resubmitted); after them it is committed (not resubmitted).
    @Test(arguments: [false, true])
    func tornPublishRollsBackOrCommits(flagsReachedTheRing: Bool) throws {
        let driver = MockPackedQueue(size: 8)
        let buffer = try Self.buffer(size: 8)
        var ring = try driver.queue()
        let first = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
        Self.offer(driver, id: 2, descriptors: 2)
        Self.offer(driver, id: 7, descriptors: 1)
        for _ in 0..<2 { _ = try first.nextID(from: &ring) }
        let firstFlags = driver.flags(at: 0)
        let before = Array(UnsafeRawBufferPointer(start: buffer.base, count: buffer.regionStride))
        ring.addUsed(head: 7, writtenLength: 1)
        first.publishUsed(&ring)
        // Undo what came after the crash point: the old_* fields and the cleared marks, and,
        // for the early crash, the flags store.
        (buffer.base + 14).copyMemory(from: Array(before[14..<16]), byteCount: 2)  // old_free_head
        (buffer.base + 18).copyMemory(from: Array(before[18..<20]), byteCount: 2)  // old_used_idx
        (buffer.base + 21).storeBytes(of: before[21], as: UInt8.self)              // old_used_wrap_counter
        Self.state(buffer, 2).storeBytes(of: 1, as: UInt8.self)  // id 7's head entry
        if !flagsReachedTheRing { driver.setFlags(firstFlags, at: 0) }
        var ring2 = try PackedVirtqueue(memory: driver.memory, size: 8, addresses: driver.addresses, features: [])
        let second = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring2)
        var taken: [UInt16] = []
        while let id = try second.nextID(from: &ring2) { taken.append(id) }
        #expect(taken == (flagsReachedTheRing ? [2] : [2, 7]))
        #expect(ring2.base.usedPosition == (flagsReachedTheRing ? 1 : 0))
        #expect(ring2.base.availablePosition == 3)
    }

    /// What the frontend hands back is checked: wrong sizes, versions, positions, loops and
    /// chains that overlap give an error (the queue then runs untracked), never a crash.
    @Test func rejectsRegionsThatCannotBeTrusted() throws {
        let driver = MockPackedQueue(size: 8)
        var ring = try driver.queue()
        let small = try Self.buffer(size: 4)
        #expect(throws: InflightError.self) { try PackedInflightTracker(buffer: small, queue: 0, ring: &ring) }
        #expect(throws: InflightError.self) { try PackedInflightTracker(buffer: small, queue: 1, ring: &ring) }
        let buffer = try Self.buffer(size: 8)
        let tracker = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
        Self.offer(driver, id: 3, descriptors: 2)
        _ = try tracker.nextID(from: &ring)
        let good = Array(UnsafeRawBufferPointer(start: buffer.base, count: buffer.regionStride))
        let corruptions: [(Int, UInt16)] = [(10, 16), (8, 9), (16, 8), (18, 200), (12, 9), (14, 9),
                                            (32 + 6, 0), (32 + 6, 9), (32 + 2, 0), (32 + 32 + 16, 9)]
        for (offset, value) in corruptions {
            buffer.base.copyMemory(from: good, byteCount: good.count)
            buffer.base.storeBytes(of: value, toByteOffset: offset, as: UInt16.self)
            var fresh = try PackedVirtqueue(memory: driver.memory, size: 8, addresses: driver.addresses, features: [])
            #expect(throws: InflightError.self, "offset \(offset) = \(value)") {
                try PackedInflightTracker(buffer: buffer, queue: 0, ring: &fresh)
            }
        }
        // A free list that loops.
        buffer.base.copyMemory(from: good, byteCount: good.count)
        Self.state(buffer, 3).storeBytes(of: UInt16(2), toByteOffset: 2, as: UInt16.self)
        var fresh = try PackedVirtqueue(memory: driver.memory, size: 8, addresses: driver.addresses, features: [])
        #expect(throws: InflightError.self) { try PackedInflightTracker(buffer: buffer, queue: 0, ring: &fresh) }
    }

    /// A driver that makes more descriptors available than the ring holds while earlier ones
    /// are in flight breaks the queue instead of overrunning the region.
    @Test func moreDescriptorsInFlightThanTheRingStopsTheQueue() throws {
        let driver = MockPackedQueue(size: 4)
        let buffer = try Self.buffer(size: 4)
        var ring = try driver.queue()
        let tracker = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
        Self.offer(driver, id: 0, descriptors: 3)
        #expect(try tracker.nextID(from: &ring) == 0)
        Self.offer(driver, id: 1, descriptors: 2)  // wraps onto id 0's first slot, still in flight
        #expect(throws: VirtqueueError.descriptorsInFlightExceedRing(queueSize: 4)) { try tracker.nextID(from: &ring) }
        #expect(ring.isBroken)
    }

    /// Random work with random crashes (between operations) on rings of 8 and 16: the driver
    /// offers chains of 1-3 descriptors whenever it has room, the device takes, completes in
    /// random order and publishes at random; each "crash" drops the device's unpublished
    /// state and starts a new ring from the initial base (as QEMU sends it) and a new tracker.
    /// Every buffer comes back to the driver exactly once (this found the dead process's
    /// unpublished used descriptors, which the driver would otherwise have read twice), and
    /// the recovered ring's positions are the ones the dead process had.
    @Test(arguments: [(8, 1), (16, 2), (8, 3)])
    func randomCrashesCompleteEveryBufferOnce(size: Int, seed: UInt64) throws {
        var random = SplitMix(seed: seed)
        let driver = MockPackedQueue(size: size)
        let buffer = try Self.buffer(size: size)
        var ring = try driver.queue()
        var tracker = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
        var taken: [UInt16] = []
        var offered = 0, returned = 0, crashes = 0
        let chain = DescriptorChain(capacity: 8)
        for _ in 0..<3000 {
            switch random.next() % 10 {
            case 0...2:
                let count = Int(random.next() % 3) + 1
                let outstanding = driver.descriptorsOfID.values.reduce(0, +)
                let free = (0..<UInt16(size)).filter { driver.descriptorsOfID[$0] == nil }
                guard outstanding + count <= size, let id = free.randomElement(using: &random) else { continue }
                Self.offer(driver, id: id, descriptors: count)
                offered += 1
            case 3...4:
                if let id = try tracker.nextID(from: &ring) {
                    try ring.readChain(head: id, into: chain)
                    #expect(chain.readableSpanCount + chain.writableSpanCount == driver.descriptorsOfID[id])
                    taken.append(id)
                }
            case 5...6:
                guard !taken.isEmpty else { continue }
                ring.addUsed(head: taken.remove(at: Int(random.next() % UInt64(taken.count))), writtenLength: 1)
            case 7:
                tracker.publishUsed(&ring)
            case 8:
                while let used = driver.takeUsed() {
                    _ = used
                    returned += 1
                }
            default:
                if random.next() % 4 == 0 {  // crash
                    crashes += 1
                    let old = ring.base
                    let oldTaken = taken
                    ring = try PackedVirtqueue(memory: driver.memory, size: UInt32(size), addresses: driver.addresses, features: [])
                    tracker = try PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring)
                    taken = []
                    #expect(ring.base == old, "recovered \(ring.base), was \(old), in flight \(oldTaken), resubmit \(tracker.resubmitList)")
                }
            }
            #expect(returned + driver.descriptorsOfID.count == offered, "a buffer came back twice or vanished")
        }
        // Finish everything.
        while let id = try tracker.nextID(from: &ring) { taken.append(id) }
        for id in taken { ring.addUsed(head: id, writtenLength: 1) }
        tracker.publishUsed(&ring)
        while driver.takeUsed() != nil { returned += 1 }
        #expect(returned == offered && driver.descriptorsOfID.isEmpty)
        #expect(offered > 200 && crashes > 30)
    }

    /// Random region contents never crash recovery: it throws, or yields a ring whose
    /// positions are inside it.
    @Test func randomRegionBytesAreRefusedOrSane() throws {
        var random = SplitMix(seed: 7)
        let driver = MockPackedQueue(size: 8)
        let buffer = try Self.buffer(size: 8)
        for round in 0..<2000 {
            let bytes = buffer.base.assumingMemoryBound(to: UInt8.self)
            for i in 0..<buffer.regionStride { bytes[i] = UInt8(truncatingIfNeeded: random.next()) }
            // Mostly plausible headers, so recovery gets past the first checks.
            buffer.base.storeBytes(of: UInt16(1), toByteOffset: 8, as: UInt16.self)
            buffer.base.storeBytes(of: UInt16(8), toByteOffset: 10, as: UInt16.self)
            if round % 2 == 0 {
                for offset in [12, 14, 16, 18] { buffer.base.storeBytes(of: UInt16(random.next() % 9), toByteOffset: offset, as: UInt16.self) }
                for offset in [20, 21] { bytes[offset] = UInt8(random.next() % 2) }
                for entry in 0..<8 {
                    let state = Self.state(buffer, entry)
                    state.storeBytes(of: UInt8(random.next() % 2), as: UInt8.self)
                    state.storeBytes(of: UInt16(random.next() % 9), toByteOffset: 2, as: UInt16.self)
                    state.storeBytes(of: UInt16(random.next() % 8), toByteOffset: 4, as: UInt16.self)
                    state.storeBytes(of: UInt16(random.next() % 4), toByteOffset: 6, as: UInt16.self)
                    state.storeBytes(of: UInt16(random.next() % 9), toByteOffset: 16, as: UInt16.self)
                }
            }
            var ring = try PackedVirtqueue(memory: driver.memory, size: 8, addresses: driver.addresses, features: [])
            guard let tracker = try? PackedInflightTracker(buffer: buffer, queue: 0, ring: &ring) else { continue }
            #expect(tracker.recoveredCount <= 8 && ring.base.usedPosition < 8 && ring.base.availablePosition < 8)
            let chain = DescriptorChain(capacity: 8)
            while let id = try? tracker.nextID(from: &ring) {
                _ = try? ring.readChain(head: id, into: chain)  // the copies' addresses may be anything
                ring.addUsed(head: id, writtenLength: 0)
            }
            tracker.publishUsed(&ring)
        }
    }
}

/// A small deterministic generator for the randomised tests.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
