import VhostUser

/// Input: byte 0 = ring size - 1 (1...256, any size), byte 1 = features (bit 0 indirect,
/// bit 1 event index, bit 2 notify on empty), bytes 2-5 = SET_VRING_BASE value (positions
/// taken modulo the size), byte 6 = span capacity, byte 7 = completion order (bit 0: complete
/// each pass in reverse, bit 1: publish once per pass instead of per buffer, bit 2: take
/// buffers in one walk, `takeAvailable(into:)`, as the server does), then the guest's
/// 64 KiB of memory (descriptor ring at gpa 0x0, driver area 0x1000, device area 0x2000).
func fuzzPackedDescriptorChain(_ input: UnsafeRawBufferPointer) {
    var bytes = FuzzBytes(input)
    let size = UInt16(bytes.u8()) + 1
    let features = VirtqueueFeatures(rawValue: bytes.u8() & 0x7)
    var base = PackedVringBase(encoded: UInt32(bytes.u16()) | UInt32(bytes.u16()) << 16)
    base.availablePosition %= size
    base.usedPosition %= size
    let capacity = Int(bytes.u8() % 64) + 1
    let order = bytes.u8()
    let guest = FuzzGuest(contents: bytes.rest())
    var ring = guest.packedQueue(size: size, features: features, base: base)
    let chains = (0..<4).map { _ in DescriptorChain(capacity: capacity) }
    var taken: [UInt16] = []
    taken.reserveCapacity(4)
    var handled = 0
    passes: while handled <= Int(size) {
        taken.removeAll(keepingCapacity: true)
        while taken.count < chains.count {
            let chain = chains[taken.count]
            let id: UInt16?
            let before = ring.base
            do throws(VirtqueueError) {
                id = order & 4 != 0 ? try ring.takeAvailable(into: chain) : try ring.popAvailable()
            } catch {
                if case .tooManySpans = error, order & 4 != 0 {
                    // The one take error that leaves the ring as it was (to be taken again into more room).
                    precondition(!ring.isBroken && ring.base == before, "a take that ran out of spans changed the ring")
                    ring.markBroken()
                }
                precondition(ring.isBroken, "a ring that reported an error must stop")
                precondition(chain.readableSpanCount == 0 && chain.writableSpanCount == 0, "a failed walk left spans behind")
                break passes
            }
            guard let id else { break }
            precondition(id < size, "a buffer id at or above the ring size was handed out")
            precondition(!taken.contains(id), "a buffer id was handed out twice while in flight")
            if order & 4 == 0 {
                do throws(VirtqueueError) {
                    try ring.readChain(head: id, into: chain)
                } catch {
                    precondition(chain.readableSpanCount == 0 && chain.writableSpanCount == 0, "a failed walk left spans behind")
                    ring.markBroken()
                    break passes
                }
            }
            precondition(chain.head == id, "the chain names another buffer")
            precondition(guest.holds(chain.readableSpans) && guest.holds(chain.writableSpans), "a span points outside guest memory")
            precondition(chain.readableSpans.reduce(0, { $0 + $1.iov_len }) == chain.readableLength, "readable length disagrees with its spans")
            precondition(chain.writableSpans.reduce(0, { $0 + $1.iov_len }) == chain.writableLength, "writable length disagrees with its spans")
            taken.append(id)
            handled += 1
        }
        if taken.isEmpty { break }
        let completion = order & 1 != 0 ? Array(taken.indices.reversed()) : Array(taken.indices)
        for i in completion {
            ring.addUsed(head: taken[i], writtenLength: UInt32(chains[i].writableLength))
            if order & 2 == 0 { ring.publishUsed() }
        }
        ring.publishUsed()
        _ = ring.shouldNotifyGuest()
    }
    precondition(handled <= Int(size), "took more buffers than the ring holds")
    let base2 = ring.base
    precondition(base2.availablePosition < size && base2.usedPosition < size, "a ring position left the ring")
    if !ring.isBroken { precondition(ring.inFlight == 0, "completed buffers still counted in flight") }
    ring.disableGuestKicks()
    _ = ring.enableGuestKicks()
}

extension FuzzGuest {
    static let packedDriverArea: UInt64 = 0x1000
    static let packedDeviceArea: UInt64 = 0x2000

    /// A packed ring of `size` (at most 256) on the fixed addresses.
    func packedQueue(size: UInt16, features: VirtqueueFeatures, base: PackedVringBase) -> PackedVirtqueue {
        let addresses = PackedVirtqueue.RingAddresses(
            descriptorRing: Self.descriptorTable + Self.userAddressOffset,
            driverArea: Self.packedDriverArea + Self.userAddressOffset,
            deviceArea: Self.packedDeviceArea + Self.userAddressOffset)
        // Cannot fail: sizes up to 256 fit the fixed layout, positions are below the size.
        return try! PackedVirtqueue(memory: memory, size: UInt32(size), addresses: addresses, features: features, base: base)
    }
}
