import Glibc
import IOThreads
import VhostUser

/// Requests whose descriptor chain is longer than a slot's own room: the chain is read again
/// into a block borrowed from the IOThread's `SpanBlockPool`, returned when the slot is
/// freed. With every block lent out, the request waits in its slot ("parked": it holds its
/// head and counts as in flight, and the queue takes nothing else) until the pool wakes the
/// queue with a `nextTurn`. Rare (chains over `inlineSpans`), so out of line.
extension VirtqueueServer {
    /// Reads the chain at `head` into a borrowed block. False when the request did not start
    /// here: it is parked (no block), or the chain was corrupt (the queue is broken).
    @inlinable @inline(never)
    final func readLongChain(slot: Int, head: UInt16, into chain: DescriptorChain) -> Bool {
        guard let block = onThread({ $0.takeSpanBlock(waiter: handlerID) }) else {
            parkedSlot = slot
            return false
        }
        chain.attachStorage(block, capacity: longChainSpans)
        slotsWithSpanBlocks += 1
        do throws(VirtqueueError) {
            try ring.readChain(head: head, into: chain)
        } catch {
            corruptChain(slot: slot, head: head, error)  // frees the slot and the block
            return false
        }
        return true
    }

    /// Starts the parked request if a block is free now. True when nothing is parked any more.
    @inlinable @inline(never)
    final func startParkedRequest() -> Bool {
        let slot = parkedSlot
        guard let head = slots.head(slot) else {
            parkedSlot = -1
            return true
        }
        parkedSlot = -1
        startRequest(inSlot: slot, head: head)
        return parkedSlot < 0
    }

    @inlinable @inline(never)
    final func returnSpanBlock(_ slot: Int) {
        guard let block = slots.withChain(slot, { $0.detachStorage() }) else { return }
        slotsWithSpanBlocks -= 1
        onThread { $0.giveSpanBlock(block) }
    }
}
