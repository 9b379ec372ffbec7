import Glibc
import VhostUser

/// A queue's preallocated request slots, as the server sees them: for each, a descriptor
/// chain to walk into and the head it came from; a free stack hands them out. Taken and
/// released on the owning IOThread only; nothing is allocated per request. The slot index
/// is the handler's completion tag.
///
/// A plain struct of pointers, not a class: a class reference in a `var` property is
/// retained around every use on the hot path. The chains are kept retained once, behind an
/// unsafe pointer, and lent out without reference counting (`withChain`). The owner calls
/// `deallocate()` once.
@usableFromInline
struct VirtqueueSlots {
    @usableFromInline let count: Int
    @usableFromInline let chains: UnsafeMutablePointer<Unmanaged<DescriptorChain>>
    /// The head of each slot's request, `free` when the slot is free.
    @usableFromInline let heads: UnsafeMutablePointer<UInt16>
    @usableFromInline let freeStack: UnsafeMutablePointer<Int32>
    @usableFromInline var freeCount: Int

    /// `heads` of a free slot (a head is below the ring size, at most 32768).
    @usableFromInline static var free: UInt16 { .max }

    @usableFromInline
    init(count: Int, spansPerRequest: Int) {
        self.count = count
        chains = .allocate(capacity: max(count, 1))
        for i in 0..<count {
            (chains + i).initialize(to: .passRetained(DescriptorChain(capacity: spansPerRequest)))
        }
        heads = .allocate(capacity: max(count, 1))
        heads.initialize(repeating: Self.free, count: max(count, 1))
        freeStack = .allocate(capacity: max(count, 1))
        for i in 0..<count { freeStack[i] = Int32(count - 1 - i) }
        freeCount = count
    }

    /// Bytes these slots hold (chains with their own span storage, heads, free stack).
    var allocatedBytes: Int {
        guard count > 0 else { return 0 }
        let chain = 128  // the DescriptorChain object: header and ten stored properties, as malloc rounds it
        let storage = DescriptorChain.storageSpans(capacity: chains[0].takeUnretainedValue().ownCapacity) * MemoryLayout<iovec>.stride
        let perSlot = chain + storage + MemoryLayout<Unmanaged<DescriptorChain>>.stride + MemoryLayout<UInt16>.stride
            + MemoryLayout<Int32>.stride
        return count * perSlot
    }

    @usableFromInline
    func deallocate() {
        for i in 0..<count { chains[i].release() }
        chains.deallocate()
        heads.deallocate()
        freeStack.deallocate()
    }

    @inlinable @inline(__always) var hasFree: Bool { freeCount > 0 }
    @inlinable @inline(__always) var inUse: Int { count - freeCount }

    /// Takes a free slot for the request at `head`.
    @inlinable @inline(__always)
    mutating func take(head: UInt16) -> Int {
        freeCount -= 1
        let slot = Int(freeStack[freeCount])
        heads[slot] = head
        return slot
    }

    /// The head of the request in `slot`, nil if the slot is free (or not a slot at all).
    @inlinable @inline(__always)
    func head(_ slot: Int) -> UInt16? {
        guard slot >= 0, slot < count else { return nil }
        let head = heads[slot]
        return head == Self.free ? nil : head
    }

    @inlinable @inline(__always)
    mutating func release(_ slot: Int) {
        heads[slot] = Self.free
        freeStack[freeCount] = Int32(slot)
        freeCount += 1
    }

    /// Lends the slot's chain (valid only inside `body`; never keep it).
    @inlinable @inline(__always)
    func withChain<R>(_ slot: Int, _ body: (DescriptorChain) -> R) -> R {
        chains[slot]._withUnsafeGuaranteedRef(body)
    }
}
