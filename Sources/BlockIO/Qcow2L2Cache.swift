import Glibc
import Synchronization

/// The L2 tables of one qcow2 image that IOThreads read, shared by all of them without a
/// lock: a set-associative cache (4 ways) of whole tables, each slot guarded by a sequence
/// number (a seqlock). A reader checks the slot's key and an even sequence number before
/// and after reading one entry; an IOThread that read a table from the image copies it in
/// while holding the slot's number odd (a memcpy, never across I/O), and gives up if
/// another thread holds it (the reader then uses its own copy). Only misses write shared
/// cache lines; hits read them. Tables are stored as on disk (big-endian).
///
/// Writable images: the allocation path writes a changed L2 entry to the file first, then
/// `update`s it in every slot holding that table (one cache shared by all IOThreads, so no
/// thread keeps a copy of its own that could go stale: the multi-queue corruption other
/// implementations shipped). A table read from the file before that write and inserted
/// after it would be stale; `insert` prevents it with the generation: a loader notes the
/// generation before its read and inserts only if it is unchanged once it holds the slot,
/// and `update` bumps the generation before it looks at the slots (both sequentially
/// consistent: either the loader sees the new generation, or `update` sees its slot).
public final class Qcow2L2Cache: @unchecked Sendable {
    public static let ways = 4
    public let slotCount: Int
    let setCount: Int
    let tableBytes: Int
    nonisolated(unsafe) private let tables: UnsafeMutableRawPointer
    private let mappedBytes: Int
    /// Per slot: the sequence number (odd while being filled) and the key (L1 index + 1; 0 empty).
    nonisolated(unsafe) private let sequences: UnsafeMutablePointer<Atomic<UInt64>>
    nonisolated(unsafe) private let keys: UnsafeMutablePointer<Atomic<UInt64>>
    /// Picks victims round-robin within a set (relaxed: only spreading matters).
    private let clock = Atomic<UInt64>(0)
    /// Bumped by every `update` (see above).
    public let generation = Atomic<UInt64>(0)

    /// `bytes` of tables of `tableBytes` each (at least one set of 4); nil if the memory
    /// cannot be mapped. Anonymous memory: pages are only touched as tables come in.
    public init?(bytes: UInt64, tableBytes: Int) {
        let wanted = max(UInt64(Self.ways), bytes / UInt64(tableBytes))
        let sets = max(1, Int(min(wanted, 1 << 20)) / Self.ways)
        slotCount = sets * Self.ways
        setCount = sets
        self.tableBytes = tableBytes
        mappedBytes = slotCount * tableBytes
        guard let memory = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              memory != MAP_FAILED else { return nil }
        tables = memory
        sequences = .allocate(capacity: slotCount)
        keys = .allocate(capacity: slotCount)
        for slot in 0..<slotCount {
            (sequences + slot).initialize(to: Atomic(0))
            (keys + slot).initialize(to: Atomic(0))
        }
    }

    deinit {
        munmap(tables, mappedBytes)
        sequences.deinitialize(count: slotCount)
        sequences.deallocate()
        keys.deinitialize(count: slotCount)
        keys.deallocate()
    }

    /// Entry `index` (host byte order) of the L2 table for L1 index `l1Index`, or nil on a miss.
    @inline(__always)
    public func entry(l1Index: UInt64, index: Int) -> UInt64? {
        let key = l1Index &+ 1
        let first = Int(l1Index % UInt64(setCount)) * Self.ways
        for slot in first..<(first + Self.ways) {
            let before = sequences[slot].load(ordering: .acquiring)
            guard before & 1 == 0, keys[slot].load(ordering: .relaxed) == key else { continue }
            // May race with a writer's memcpy: the value is used only if the sequence held.
            let raw = tables.load(fromByteOffset: slot * tableBytes + index * 8, as: UInt64.self)
            atomicMemoryFence(ordering: .acquiring)
            if sequences[slot].load(ordering: .relaxed) == before { return UInt64(bigEndian: raw) }
        }
        return nil
    }

    /// Copies the table for `l1Index` (read from the image, `tableBytes` long, after
    /// `generation` read `loadedAt`) into a slot of its set, unless another thread is filling
    /// that slot right now or an entry of the image changed since.
    public func insert(l1Index: UInt64, table: UnsafeRawPointer, loadedAt: UInt64) {
        let first = Int(l1Index % UInt64(setCount)) * Self.ways
        let slot = first + Int(clock.wrappingAdd(1, ordering: .relaxed).oldValue % UInt64(Self.ways))
        let before = sequences[slot].load(ordering: .relaxed)
        guard before & 1 == 0,
              sequences[slot].compareExchange(expected: before, desired: before &+ 1, ordering: .sequentiallyConsistent).exchanged else { return }
        keys[slot].store(0, ordering: .relaxed)
        if generation.load(ordering: .sequentiallyConsistent) == loadedAt {
            atomicMemoryFence(ordering: .releasing)
            memcpy(tables + slot * tableBytes, table, tableBytes)
            keys[slot].store(l1Index &+ 1, ordering: .relaxed)
        }
        sequences[slot].store(before &+ 2, ordering: .releasing)
    }

    /// Sets `count` entries from `first` (big-endian, as on disk, already written to the
    /// file) in every slot holding the table for `l1Index`. Only the allocation path calls
    /// it, under the image's allocation lock; it waits out a loader's short memcpy.
    public func update(l1Index: UInt64, first: Int, count: Int, from entries: UnsafeRawPointer) {
        generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
        let key = l1Index &+ 1
        let firstSlot = Int(l1Index % UInt64(setCount)) * Self.ways
        for slot in firstSlot..<(firstSlot + Self.ways) {
            while true {
                let before = sequences[slot].load(ordering: .sequentiallyConsistent)
                if before & 1 != 0 {
                    sched_yield()
                    continue
                }
                guard keys[slot].load(ordering: .relaxed) == key else { break }
                guard sequences[slot].compareExchange(expected: before, desired: before &+ 1, ordering: .acquiring).exchanged else { continue }
                atomicMemoryFence(ordering: .releasing)
                memcpy(tables + slot * tableBytes + first * 8, entries, count * 8)
                sequences[slot].store(before &+ 2, ordering: .releasing)
                break
            }
        }
    }
}
