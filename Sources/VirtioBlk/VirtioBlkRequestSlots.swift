import BlockIO
import IOThreads
import VhostUser

/// The virtio-blk side of a queue's request slots (the server keeps the chains): for each,
/// the parsed request's segment buffer (its data spans go to the chain's `deviceSpans`), the
/// block request handed to the I/O API, and the parsed request itself. Used on the owning
/// IOThread only; nothing is allocated per request.
///
/// A plain struct of pointers, not a class: a class reference in a `var` property is
/// retained around every use on the hot path. The buffers are kept retained once, behind an
/// unsafe pointer, and lent out without reference counting (`withBuffers`). The owner calls
/// `deallocate()` once.
struct VirtioBlkRequestSlots {
    let count: Int
    private let buffers: UnsafeMutablePointer<Unmanaged<VirtioBlkRequestBuffers>>
    private let blockRequests: UnsafeMutablePointer<BlockRequest>
    private let parsed: UnsafeMutablePointer<VirtioBlkRequest?>

    init(count: Int) {
        self.count = count
        buffers = .allocate(capacity: max(count, 1))
        for i in 0..<count {
            (buffers + i).initialize(to: .passRetained(VirtioBlkRequestBuffers(dataSpanCapacity: 0, segmentCapacity: 1)))
        }
        blockRequests = .allocate(capacity: max(count, 1))
        blockRequests.initialize(repeating: BlockRequest(), count: max(count, 1))
        parsed = .allocate(capacity: max(count, 1))
        parsed.initialize(repeating: nil, count: max(count, 1))
    }

    func deallocate() {
        for i in 0..<count {
            blockRequests[i].releaseScratch()
            buffers[i].release()
        }
        buffers.deallocate()
        blockRequests.deinitialize(count: max(count, 1))
        blockRequests.deallocate()
        parsed.deinitialize(count: max(count, 1))
        parsed.deallocate()
    }

    /// Bytes per slot: the buffers object with its segment, the block request, the parsed
    /// request (bounce buffers, grown only for unaligned O_DIRECT I/O, come on top).
    static var bytesPerSlot: Int {
        let buffers = 64 + MemoryLayout<VirtioBlkSegment>.stride + 2 * 16  // object + its two small allocations (malloc minimum 32)
        return MemoryLayout<Unmanaged<VirtioBlkRequestBuffers>>.stride + buffers + MemoryLayout<BlockRequest>.stride
            + MemoryLayout<VirtioBlkRequest?>.stride
    }

    func assignTokens(handler: HandlerID) {
        for i in 0..<count { blockRequests[i].token = CompletionToken(handler: handler, tag: UInt64(i)) }
    }

    @inline(__always) func release(_ slot: Int) {
        parsed[slot] = nil
    }

    /// Lends the slot's buffers (valid only inside `body`; never keep them).
    @inline(__always)
    func withBuffers<R>(_ slot: Int, _ body: (VirtioBlkRequestBuffers) throws -> R) rethrows -> R {
        try buffers[slot]._withUnsafeGuaranteedRef { try body($0) }
    }
    @inline(__always) func blockRequest(_ slot: Int) -> UnsafeMutablePointer<BlockRequest> { blockRequests + slot }
    @inline(__always) func parsedRequest(_ slot: Int) -> UnsafeMutablePointer<VirtioBlkRequest?> { parsed + slot }
}
