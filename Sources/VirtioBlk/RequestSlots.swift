import BlockIO
import IOThreads
import VhostUser

/// A queue's preallocated request slots: for each, a descriptor chain, the parsed request's
/// buffers, the block request handed to the I/O API, and the parsed request itself. Taken
/// and released on the owning IOThread only, through a free stack; nothing is allocated
/// per request. The slot index is the tag in the CQE's user_data.
///
/// The per-slot objects are kept retained once, behind unsafe pointers, and lent out
/// without reference counting (`withChain`): an array of class references costs a
/// retain/release pair per access on the hot path.
final class RequestSlots {
    let count: Int
    private let chains: UnsafeMutablePointer<Unmanaged<DescriptorChain>>
    private let buffers: UnsafeMutablePointer<Unmanaged<VirtioBlkRequestBuffers>>
    private let blockRequests: UnsafeMutablePointer<BlockRequest>
    private let parsed: UnsafeMutablePointer<VirtioBlkRequest?>
    private let freeStack: UnsafeMutablePointer<Int32>
    private var freeCount: Int

    init(count: Int, spansPerRequest: Int) {
        self.count = count
        chains = .allocate(capacity: count)
        buffers = .allocate(capacity: count)
        for i in 0..<count {
            (chains + i).initialize(to: .passRetained(DescriptorChain(capacity: spansPerRequest)))
            (buffers + i).initialize(to: .passRetained(VirtioBlkRequestBuffers(dataSpanCapacity: spansPerRequest, segmentCapacity: 1)))
        }
        blockRequests = .allocate(capacity: count)
        blockRequests.initialize(repeating: BlockRequest(), count: count)
        parsed = .allocate(capacity: count)
        parsed.initialize(repeating: nil, count: count)
        freeStack = .allocate(capacity: count)
        for i in 0..<count { freeStack[i] = Int32(count - 1 - i) }
        freeCount = count
    }

    deinit {
        for i in 0..<count {
            blockRequests[i].releaseScratch()
            chains[i].release()
            buffers[i].release()
        }
        chains.deallocate()
        buffers.deallocate()
        blockRequests.deinitialize(count: count)
        blockRequests.deallocate()
        parsed.deinitialize(count: count)
        parsed.deallocate()
        freeStack.deallocate()
    }

    func assignTokens(handler: HandlerID) {
        for i in 0..<count { blockRequests[i].token = CompletionToken(handler: handler, tag: UInt64(i)) }
    }

    @inline(__always) var hasFree: Bool { freeCount > 0 }
    @inline(__always) var inUse: Int { count - freeCount }

    @inline(__always) func take() -> Int {
        freeCount -= 1
        return Int(freeStack[freeCount])
    }

    @inline(__always) func release(_ slot: Int) {
        parsed[slot] = nil
        freeStack[freeCount] = Int32(slot)
        freeCount += 1
    }

    /// Lends the slot's chain and buffers (valid only inside `body`; never keep them).
    @inline(__always)
    func withChain<R>(_ slot: Int, _ body: (DescriptorChain, VirtioBlkRequestBuffers) throws -> R) rethrows -> R {
        try chains[slot]._withUnsafeGuaranteedRef { chain in
            try buffers[slot]._withUnsafeGuaranteedRef { buffers in try body(chain, buffers) }
        }
    }
    @inline(__always) func blockRequest(_ slot: Int) -> UnsafeMutablePointer<BlockRequest> { blockRequests + slot }
    @inline(__always) func parsedRequest(_ slot: Int) -> UnsafeMutablePointer<VirtioBlkRequest?> { parsed + slot }
}
