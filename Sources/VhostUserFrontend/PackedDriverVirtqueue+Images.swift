import CSpindle
import VhostUser

/// Chains written from per-id descriptor images.
///
/// A driver that reuses one buffer id for the same buffers (spindle-bench's request slots)
/// keeps each id's descriptors as images in driver-private memory, written once at setup:
/// per descriptor its address and one word of length | id << 32 | flags << 48, the flags
/// without AVAIL/USED. A request changes what differs (`updateImage`: the data length and
/// direction) and `appendImageChain` copies the chain into the ring, or-ing in the wrap
/// counter's bits: each non-head descriptor in one 16-byte store, the head's address,
/// length and id, then its flags last with a release store. The device reads exactly what
/// `appendDescriptor`s + `finishChain` would have written; this only saves the per-field
/// work (~117 instructions per request in one pass, see bench/results/2026-12-07-packed-client.md).
/// Descriptor fields are little-endian, the host order on every platform Spindle runs on.
extension PackedDriverVirtqueue {
    /// Descriptor images per id: chains of up to this many come from an image.
    public static let imageDescriptors = 4
    @usableFromInline static let imageBytesPerID = 16 * imageDescriptors

    @inlinable @inline(__always)
    func image(_ id: UInt16) -> UnsafeMutableRawPointer { images + Int(id) &* Self.imageBytesPerID }

    @inlinable @inline(__always)
    static func imageWord(length: UInt32, id: UInt16, flags: UInt16) -> UInt64 {
        UInt64(length) | UInt64(id) &<< 32 | UInt64(flags) &<< 48
    }

    /// Sets descriptor `index` of id `id`'s image (`flags`: NEXT, WRITE; not AVAIL/USED).
    public func writeImage(id: UInt16, index: Int, address: UInt64, length: UInt32, flags: UInt16) {
        precondition(Int(id) < idCount && index >= 0 && index < Self.imageDescriptors, "image \(id).\(index) out of range")
        let descriptor = image(id) + 16 * index
        descriptor.storeBytes(of: address, as: UInt64.self)
        descriptor.storeBytes(of: Self.imageWord(length: length, id: id, flags: flags), toByteOffset: 8, as: UInt64.self)
    }

    /// Changes the length and flags of descriptor `index` of id `id`'s image (per request;
    /// `id` < `idCount` and `index` < `imageDescriptors`, as for `writeImage`).
    @inlinable @inline(__always)
    public func updateImage(id: UInt16, index: Int, length: UInt32, flags: UInt16) {
        assert(Int(id) < idCount && index >= 0 && index < Self.imageDescriptors)
        image(id).storeBytes(of: Self.imageWord(length: length, id: id, flags: flags), toByteOffset: 16 * index + 8, as: UInt64.self)
    }

    /// The length in descriptor `index` of id `id`'s image.
    @inlinable @inline(__always)
    public func imageLength(id: UInt16, index: Int) -> UInt32 {
        image(id).load(fromByteOffset: 16 * index + 8, as: UInt32.self)
    }

    /// Makes id `id`'s chain available from the first `count` descriptors of its image
    /// (1...`imageDescriptors`; at most the ring size). A chain that crosses the ring's end
    /// (its positions are not contiguous there) goes descriptor by descriptor.
    @inlinable @inline(__always)
    public mutating func appendImageChain(id: UInt16, count: Int) {
        appendImageChain(id: id, count: count, secondWord: image(id).load(fromByteOffset: 24, as: UInt64.self))
    }

    /// `appendImageChain` with the second descriptor's length | id << 32 | flags << 48 given
    /// (`imageWord`), not read from the image: a per-request length without a store to it.
    @inlinable @inline(__always)
    public mutating func appendImageChain(id: UInt16, count: Int, secondWord: UInt64) {
        precondition(count >= 1 && count <= Self.imageDescriptors)
        assert(chainCount == 0, "an image chain in the middle of an appended one")
        let head = availPosition
        let end = Int(head) &+ count
        guard end <= Int(size) else {
            if count > 1 { image(id).storeBytes(of: secondWord, toByteOffset: 24, as: UInt64.self) }
            return appendImageChainAcrossEnd(id: id, count: count)
        }
        let image = UnsafeRawPointer(image(id))
        let availableBits = PackedVirtqueueLayout.availableFlags(wrap: availWrap)
        let wrapBits = SIMD2<UInt64>(0, UInt64(availableBits) &<< 48)
        let ring = entry(head)
        if count > 1 {
            let second = SIMD2<UInt64>(image.load(fromByteOffset: 16, as: UInt64.self), secondWord) | wrapBits
            ring.storeBytes(of: second, toByteOffset: 16, as: SIMD2<UInt64>.self)
        }
        for index in 2..<max(count, 2) {
            let descriptor = image.load(fromByteOffset: 16 * index, as: SIMD2<UInt64>.self) | wrapBits
            ring.storeBytes(of: descriptor, toByteOffset: 16 * index, as: SIMD2<UInt64>.self)
        }
        let word = image.load(fromByteOffset: 8, as: UInt64.self)
        ring.storeBytes(of: image.load(as: UInt64.self), as: UInt64.self)
        ring.storeBytes(of: UInt32(truncatingIfNeeded: word), toByteOffset: 8, as: UInt32.self)
        ring.storeBytes(of: UInt16(truncatingIfNeeded: word &>> 32), toByteOffset: 12, as: UInt16.self)
        chainLengths[Int(id)] = UInt16(truncatingIfNeeded: count)
        spindle_store_release_u16(ring + 14, UInt16(truncatingIfNeeded: word &>> 48) | availableBits)
        if end == Int(size) {
            availPosition = 0
            availWrap.toggle()
        } else {
            availPosition = UInt16(truncatingIfNeeded: end)
        }
        madeAvailable &+= UInt32(truncatingIfNeeded: count)
    }

    /// `appendImageChain` for a chain that crosses the ring's end: the same descriptors
    /// through `appendDescriptor` (each its own position and wrap counter) and `finishChain`.
    @usableFromInline @inline(never)
    mutating func appendImageChainAcrossEnd(id: UInt16, count: Int) {
        let image = UnsafeRawPointer(image(id))
        for index in 0..<count {
            let word = image.load(fromByteOffset: 16 * index + 8, as: UInt64.self)
            appendDescriptor(address: image.load(fromByteOffset: 16 * index, as: UInt64.self),
                             length: UInt32(truncatingIfNeeded: word), flags: UInt16(truncatingIfNeeded: word &>> 48), id: id)
        }
        finishChain(id: id)
    }
}
