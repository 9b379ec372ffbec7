import Glibc
import IOThreads
import VhostUser

/// Requests whose descriptor chain is longer than a slot's own room: the chain is read again
/// into a block borrowed from the IOThread's `SpanBlockPool`, returned when the slot is
/// freed. With every block lent out, the request waits in its slot ("parked": it holds its
/// head and counts as in flight, and the queue takes nothing else) until the pool wakes the
/// queue with a `nextTurn`. Rare (chains over `inlineSpans`), so out of line.
///
/// A ring that walks while taking (packed) cannot read a taken chain again (the device's used
/// descriptors may overwrite it), but a take that ran out of spans left the buffer in the
/// ring: it is taken again into the borrowed block. Without a block it waits in the ring, its
/// free slot marked parked, and the queue takes nothing else until the pool wakes it.
extension VirtqueueServer {
    /// Takes the ring's next buffer, which did not fit `slot`'s own spans, into a borrowed
    /// block. Nil when no block is free (`slot`, still free, is parked) or the buffer is gone.
    @inlinable @inline(never)
    final func takeLongRequest(into slot: Int) throws(VirtqueueError) -> UInt16? {
        guard let block = onThread({ $0.takeSpanBlock(waiter: handlerID) }) else {
            parkedSlot = slot
            return nil
        }
        slots.withChain(slot) { $0.attachStorage(block, capacity: longChainSpans) }
        slotsWithSpanBlocks += 1
        let head: UInt16?
        do {
            head = try takeRequest(into: slot)
        } catch {
            returnSpanBlock(slot)
            throw error
        }
        if head == nil { returnSpanBlock(slot) }  // only a driver that took its buffer back
        return head
    }

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

    /// Starts the parked request if a block is free now. True when nothing is parked any more
    /// (a packed queue's parked slot is free: its buffer is in the ring, and the pass takes it
    /// again).
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
