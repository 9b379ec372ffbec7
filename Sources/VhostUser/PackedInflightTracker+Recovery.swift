/// Taking over a packed queue's inflight region when the queue starts: a fresh region is
/// initialised; one a previous process used is recovered (vhost-user.rst, "When
/// reconnecting"). Everything in it comes from shared memory and is checked.
extension PackedInflightTracker {
    /// Takes over queue `queue`'s region for `ring`. With content, the ring is restored from
    /// it: used descriptors continue where the previous process published its last batch, the
    /// buffers it left in flight are resubmitted first (from their copies, in the order they
    /// were taken) and new buffers are taken after the ring slots those occupy.
    public convenience init(buffer: InflightBuffer, queue: Int, ring: inout PackedVirtqueue) throws(InflightError) {
        guard buffer.holdsPackedRegions else {
            throw InflightError("the inflight buffer was sized for split rings only (\(buffer.regionStride) bytes a queue)")
        }
        guard let region = buffer.queueRegion(queue) else {
            throw InflightError("the inflight buffer has no region for queue \(queue) (it covers \(buffer.queueCount))")
        }
        guard buffer.queueSize == Int(ring.size) else {
            throw InflightError("the inflight buffer is for queues of \(buffer.queueSize) entries, queue \(queue) has \(ring.size)")
        }
        // The tracker's `publishUsed` reads the ids of each used batch: have the ring record them.
        ring.batchIDCapacity = Int(ring.size)
        let size = ring.size
        let n = Int(size)
        let links = PackedInflightLinks(size: n)
        typealias H = PackedInflightLayout.Header
        typealias S = PackedInflightLayout.State
        let version = Self.load16(region, H.version)
        if version == 0 {
            // Fresh buffer: every entry free, used descriptors start at the ring's base.
            (region + PackedInflightLayout.headerBytes).initializeMemory(
                as: UInt8.self, repeating: 0, count: PackedInflightLayout.descriptorStateBytes * n)
            for entry in 0..<size {
                links.next[Int(entry)] = entry + 1
                Self.store16(Self.state(region, entry), S.next, entry + 1)
            }
            let base = ring.base
            Self.writeHeader(region, size: size, freeHead: 0, usedPosition: base.usedPosition, usedWrap: base.usedWrap)
            Self.store16(region, H.version, InflightLayout.version)
            self.init(buffer: buffer, region: region, size: size, links: links, freeHead: 0, freeCount: n,
                      counter: 1, resubmitList: [])
            return
        }
        guard version == InflightLayout.version else {
            throw InflightError("queue \(queue): inflight region version \(version) is not \(InflightLayout.version)")
        }
        let descNum = Self.load16(region, H.descNum)
        guard descNum == size else {
            throw InflightError("queue \(queue): inflight region holds \(descNum) descriptors, the queue has \(size)")
        }
        var freeHead = Self.load16(region, H.freeHead)
        var usedIdx = Self.load16(region, H.usedIdx)
        var usedWrap = region.load(fromByteOffset: H.usedWrap, as: UInt8.self)
        let oldFreeHead = Self.load16(region, H.oldFreeHead)
        let oldUsedIdx = Self.load16(region, H.oldUsedIdx)
        let oldUsedWrap = region.load(fromByteOffset: H.oldUsedWrap, as: UInt8.self)
        guard freeHead <= size, oldFreeHead <= size, usedIdx < size, oldUsedIdx < size,
              usedWrap <= 1, oldUsedWrap <= 1 else {
            throw InflightError("queue \(queue): inflight region header out of range (free_head \(freeHead)/\(oldFreeHead), used_idx \(usedIdx)/\(oldUsedIdx), wrap \(usedWrap)/\(oldUsedWrap), ring of \(size))")
        }
        // A batch caught between used_idx and old_used_idx: published if the first used
        // descriptor no longer shows the driver's available flags of that lap.
        if usedIdx != oldUsedIdx || usedWrap != oldUsedWrap {
            let bits = PackedVirtqueueLayout.descriptorFlagAvailable | PackedVirtqueueLayout.descriptorFlagUsed
            let published = ring.descriptorFlags(at: oldUsedIdx) & bits != PackedVirtqueueLayout.availableFlags(wrap: oldUsedWrap == 1)
            if !published {
                freeHead = oldFreeHead
                usedIdx = oldUsedIdx
                usedWrap = oldUsedWrap
            }
        } else {
            freeHead = oldFreeHead
        }
        // Entries on the free list are not in flight.
        var onFreeList = [Bool](repeating: false, count: n)
        var cursor = freeHead
        while cursor < size {
            guard !onFreeList[Int(cursor)] else { throw InflightError("queue \(queue): the inflight region's free list loops at entry \(cursor)") }
            onFreeList[Int(cursor)] = true
            Self.state(region, cursor).storeBytes(of: 0, toByteOffset: S.inflight, as: UInt8.self)
            cursor = Self.load16(Self.state(region, cursor), S.next)
        }
        // The rest: chains of buffers in flight, each from a marked head entry.
        var claimed = onFreeList
        var found: [(counter: UInt64, entries: [UInt16], id: UInt16, descriptors: [PackedVirtqueue.DescriptorCopy])] = []
        var ids = Set<UInt16>()
        for head in 0..<size where !onFreeList[Int(head)] {
            let state = Self.state(region, head)
            guard state.load(fromByteOffset: S.inflight, as: UInt8.self) == 1 else { continue }
            let num = Self.load16(state, S.num)
            let last = Self.load16(state, S.last)
            guard num >= 1, num <= size else { throw InflightError("queue \(queue): inflight entry \(head) has \(num) descriptors") }
            var copies: [PackedVirtqueue.DescriptorCopy] = []
            var entries: [UInt16] = []
            var entry = head
            for k in 0..<num {
                guard entry < size, !claimed[Int(entry)] else {
                    throw InflightError("queue \(queue): inflight chain at entry \(head) runs into entry \(entry), free or taken")
                }
                claimed[Int(entry)] = true
                entries.append(entry)
                let e = Self.state(region, entry)
                copies.append(.init(address: UInt64(littleEndian: e.load(fromByteOffset: S.addr, as: UInt64.self)),
                                    length: UInt32(littleEndian: e.load(fromByteOffset: S.len, as: UInt32.self)),
                                    id: Self.load16(e, S.id), flags: Self.load16(e, S.flags)))
                if k + 1 < num { entry = Self.load16(e, S.next) }
            }
            guard entry == last else { throw InflightError("queue \(queue): inflight chain at entry \(head) does not end at its last entry \(last)") }
            let id = copies[copies.count - 1].id  // a packed buffer's id is in its last descriptor
            guard id < size, ids.insert(id).inserted else {
                throw InflightError("queue \(queue): inflight buffer id \(id) out of range or in flight twice")
            }
            let count = UInt64(littleEndian: state.load(fromByteOffset: S.counter, as: UInt64.self))
            found.append((count, entries, id, copies))
        }
        found.sort { $0.counter < $1.counter }
        guard ring.restore(usedPosition: usedIdx, usedWrap: usedWrap == 1,
                           chains: found.map { ($0.id, $0.descriptors) }) else {
            throw InflightError("queue \(queue): the buffers the inflight region holds in flight do not fit the ring")
        }
        // Every entry not in a recovered chain is free again (also ones a torn update leaked).
        var free: [UInt16] = []
        for entry in 0..<size where !claimed[Int(entry)] || onFreeList[Int(entry)] { free.append(entry) }
        for (k, entry) in free.enumerated() {
            let next = k + 1 < free.count ? free[k + 1] : size
            links.next[Int(entry)] = next
            Self.store16(Self.state(region, entry), S.next, next)
            Self.state(region, entry).storeBytes(of: 0, toByteOffset: S.inflight, as: UInt8.self)
        }
        var highest: UInt64 = 0
        for chain in found {
            let head = chain.entries[0]
            links.headOfID[Int(chain.id)] = head
            links.count[Int(head)] = UInt16(chain.entries.count)
            links.last[Int(head)] = chain.entries[chain.entries.count - 1]
            for k in 1..<chain.entries.count { links.next[Int(chain.entries[k - 1])] = chain.entries[k] }
            highest = max(highest, chain.counter)
        }
        let head = free.first ?? size
        Self.writeHeader(region, size: size, freeHead: head, usedPosition: usedIdx, usedWrap: usedWrap == 1)
        self.init(buffer: buffer, region: region, size: size, links: links, freeHead: head, freeCount: free.count,
                  counter: highest &+ 1, resubmitList: found.map(\.id))
    }

    private static func writeHeader(_ region: UnsafeMutableRawPointer, size: UInt16, freeHead: UInt16,
                                    usedPosition: UInt16, usedWrap: Bool) {
        typealias H = PackedInflightLayout.Header
        store16(region, H.descNum, size)
        store16(region, H.freeHead, freeHead)
        store16(region, H.oldFreeHead, freeHead)
        store16(region, H.usedIdx, usedPosition)
        store16(region, H.oldUsedIdx, usedPosition)
        region.storeBytes(of: usedWrap ? 1 : 0, toByteOffset: H.usedWrap, as: UInt8.self)
        region.storeBytes(of: usedWrap ? 1 : 0, toByteOffset: H.oldUsedWrap, as: UInt8.self)
    }
}
