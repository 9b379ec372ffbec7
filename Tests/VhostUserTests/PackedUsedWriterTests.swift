import SpindleTestSupport
import Testing
@testable import VhostUser

/// The used-descriptor writer: `addUsed` writes a used descriptor but its batch's first
/// flags, which `publishUsed` stores last. Batches of every size, out of order, with chains
/// of 1-3 descriptors, across many laps of odd-sized rings; the off_wrap arithmetic against
/// a walk of the ring; and a driver that reuses ids before it could see them used.
@Suite struct PackedUsedWriterTests {
    static let data: UInt64 = 0x10000

    /// A small deterministic generator (splitmix64), so a failure can be replayed.
    struct Numbers {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(bound))
        }
    }

    /// Each round: the driver fills what the ring has room for with chains of 1-3
    /// descriptors (fresh ids), the device takes them all and completes them in a shuffled
    /// order, in batches of 1 to 5. Nothing of a batch is visible before its publish; after
    /// it, the driver reads exactly that batch,
    /// in completion order, with lengths and WRITE flags; the bases agree at the end.
    @Test(arguments: [3, 5, 7, 13])
    func batchesAcrossTheRingsEnd(size: Int) throws {
        let driver = MockPackedQueue(size: size)
        var ring = try driver.queue()
        var numbers = Numbers(state: UInt64(size))
        var freeIDs = Array(UInt16(0)..<UInt16(size))
        var completions = 0
        for _ in 0..<(40 * size / 3 + 10) {
            var room = size
            var taken: [UInt16] = []
            while room > 0, let id = freeIDs.popLast() {
                let count = min(room, 1 + numbers.next(3))
                driver.offer((0..<count).map { (Self.data + 0x100 * UInt64($0), 16, $0 == count - 1) }, id: id)
                room -= count
                #expect(try ring.popAvailable() == id)
                taken.append(id)
            }
            #expect(ring.inFlight == taken.count)
            for i in stride(from: taken.count - 1, to: 0, by: -1) { taken.swapAt(i, numbers.next(i + 1)) }
            var next = 0
            while next < taken.count {
                let batch = Array(taken[next..<min(taken.count, next + 1 + numbers.next(5))])
                next += batch.count
                for id in batch { ring.addUsed(head: id, writtenLength: UInt32(id % 3)) }
                #expect(driver.takeUsed() == nil, "the batch's first flags are stored last, by publishUsed")
                ring.publishUsed()
                for id in batch {
                    let used = try #require(driver.takeUsed())
                    #expect(used.id == id && used.length == UInt32(id % 3))
                    #expect(used.flags & 2 == (id % 3 > 0 ? 2 : 0))
                }
                #expect(driver.takeUsed() == nil)
                completions += batch.count
            }
            freeIDs.append(contentsOf: taken)
            #expect(ring.inFlight == 0)
            #expect(ring.base == PackedVringBase(availablePosition: UInt16(driver.nextAvailable), availableWrap: driver.availableWrap,
                                                 usedPosition: UInt16(driver.nextUsed), usedWrap: driver.usedWrap))
        }
        #expect(completions > 10 * size)
    }

    /// A buffer added twice, or one never taken, is written once / not at all.
    @Test func repeatedOrUnknownIdsAreIgnored() throws {
        let driver = MockPackedQueue(size: 5)
        var ring = try driver.queue()
        driver.offer([(Self.data, 16, true)], id: 2)
        #expect(try ring.popAvailable() == 2)
        ring.addUsed(head: 2, writtenLength: 4)
        ring.addUsed(head: 2, writtenLength: 9)
        ring.addUsed(head: 4, writtenLength: 9)
        ring.addUsed(head: 5, writtenLength: 9)
        ring.publishUsed()
        #expect(driver.takeUsed()?.length == 4)
        #expect(driver.takeUsed() == nil)
        #expect(ring.base.usedPosition == 1)
    }

    /// A driver that makes an id available again before it saw it used, more times in one
    /// batch than the ring has ids: every used descriptor is still written inside the ring
    /// and the positions stay in it (the driver gets what it asked for, the device no harm).
    @Test func idsReusedBeforeTheirPublishStayInTheRing() throws {
        let driver = MockPackedQueue(size: 3)
        var ring = try driver.queue()
        for _ in 0..<7 {
            driver.offer([(Self.data, 16, true)], id: 1)
            #expect(try ring.popAvailable() == 1)
            ring.addUsed(head: 1, writtenLength: 1)
        }
        ring.publishUsed()
        #expect(ring.base.usedPosition < 3 && ring.base.availablePosition < 3)
        #expect(ring.base.usedPosition == 1 && ring.base.usedWrap)  // 7 slots from (0, wrap): two laps turned
        #expect(ring.inFlight == 0 && !ring.isBroken)
    }

    /// `needsEvent` against a walk of the ring, for every old position and wrap, every
    /// distance below a lap and every event position and wrap, on small odd and even rings:
    /// an event fires exactly when the device wrote the used descriptor at the event's
    /// position in the event's lap.
    @Test(arguments: [1, 2, 3, 5, 7, 8])
    func eventArithmeticMatchesAWalk(size: Int) {
        for start in 0..<size {
            for startWrap in [false, true] {
                for advanced in 0..<size {
                    var visited: Set<UInt16> = []
                    var position = start, wrap = startWrap
                    for _ in 0..<advanced {
                        visited.insert(PackedVringBase.half(UInt16(position), wrap))
                        position += 1
                        if position == size { position = 0; wrap.toggle() }
                    }
                    for event in 0..<size {
                        for eventWrap in [false, true] {
                            let offWrap = PackedVringBase.half(UInt16(event), eventWrap)
                            let fires = PackedVirtqueue.needsEvent(offWrap: offWrap, newPosition: UInt16(position), newWrap: wrap,
                                                                   advanced: UInt32(advanced), size: UInt16(size))
                            #expect(fires == visited.contains(offWrap),
                                    "size \(size): \(start)/\(startWrap) + \(advanced), event \(event)/\(eventWrap)")
                        }
                    }
                }
                #expect(PackedVirtqueue.needsEvent(offWrap: 0, newPosition: UInt16(start), newWrap: startWrap,
                                                   advanced: UInt32(size), size: UInt16(size)), "a whole lap always fires")
            }
        }
    }
}
