import BlockIO
import VhostUser

/// A queue's preallocated request slots: for each, a descriptor chain, the parsed request's
/// buffers, the block request handed to the I/O API, and the parsed request itself. Taken
/// and released on the owning IOThread only, through a free stack; nothing is allocated
/// per request. The slot index is the tag in the CQE's user_data.
final class RequestSlots {
    let count: Int
    private let chains: [DescriptorChain]
    private let buffers: [VirtioBlkRequestBuffers]
    private let blockRequests: UnsafeMutablePointer<BlockRequest>
    private let parsed: UnsafeMutablePointer<VirtioBlkRequest?>
    private let freeStack: UnsafeMutablePointer<Int32>
    private var freeCount: Int

    init(count: Int, spansPerRequest: Int) {
        self.count = count
        chains = (0..<count).map { _ in DescriptorChain(capacity: spansPerRequest) }
        buffers = (0..<count).map { _ in VirtioBlkRequestBuffers(dataSpanCapacity: spansPerRequest, segmentCapacity: 1) }
        blockRequests = .allocate(capacity: count)
        blockRequests.initialize(repeating: BlockRequest(), count: count)
        parsed = .allocate(capacity: count)
        parsed.initialize(repeating: nil, count: count)
        freeStack = .allocate(capacity: count)
        for i in 0..<count { freeStack[i] = Int32(count - 1 - i) }
        freeCount = count
    }

    deinit {
        for i in 0..<count { blockRequests[i].releaseScratch() }
        blockRequests.deinitialize(count: count)
        blockRequests.deallocate()
        parsed.deinitialize(count: count)
        parsed.deallocate()
        freeStack.deallocate()
    }

    func assignTokens(handler: UInt16) {
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

    @inline(__always) func chain(_ slot: Int) -> DescriptorChain { chains[slot] }
    @inline(__always) func requestBuffers(_ slot: Int) -> VirtioBlkRequestBuffers { buffers[slot] }
    @inline(__always) func blockRequest(_ slot: Int) -> UnsafeMutablePointer<BlockRequest> { blockRequests + slot }
    @inline(__always) func parsedRequest(_ slot: Int) -> UnsafeMutablePointer<VirtioBlkRequest?> { parsed + slot }
}
