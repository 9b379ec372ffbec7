import VhostUser

/// Input: byte 0 = ring size code (2^(n%9)), byte 1 = features (bit 0 indirect, bit 1
/// event index), bytes 2–3 = last available index, byte 4 = span capacity, then the guest's
/// 64 KiB of memory (rings at gpa 0x0 / 0x1000 / 0x2000, indirect tables anywhere).
func fuzzDescriptorChain(_ input: UnsafeRawBufferPointer) {
    var bytes = FuzzBytes(input)
    let sizeCode = bytes.u8()
    let features = VirtqueueFeatures(rawValue: bytes.u8() & 0x3)
    let lastAvailable = bytes.u16()
    let capacity = Int(bytes.u8() % 64) + 1
    let guest = FuzzGuest(contents: bytes.rest())
    var queue = guest.queue(sizeCode: sizeCode, features: features, lastAvailableIndex: lastAvailable)
    let chain = DescriptorChain(capacity: capacity)
    walkAvailableChains(&queue, guest: guest, chain: chain) { _ in 0 }
    _ = queue.shouldNotifyGuest()
    _ = queue.enableGuestKicks()
}
