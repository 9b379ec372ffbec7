#if canImport(Glibc)
import Glibc
#endif

/// Walking a packed ring's buffer into host spans.
extension PackedVirtqueue {
    /// Reads the buffer `popAvailable()` returned as `id` into `chain` (device-readable spans
    /// first, then device-writable). Exactly as many ring descriptors as `popAvailable`
    /// counted are read, whatever the driver wrote since: the walk is bounded by that count.
    /// A lone INDIRECT descriptor is followed into its table (one level, every entry used in
    /// order). Every descriptor field is read once. On error `chain` is empty.
    /// Out of line like the split ring's walk (one call per request); `readChain` forwards.
    public func walkBuffer(id: UInt16, into chain: DescriptorChain) throws(VirtqueueError) {
        chain.clear(head: id)
        guard id < size else { throw .bufferIdOutOfRange(id: id, queueSize: size) }
        let entry = buffers[Int(id)]
        guard entry != 0 else { throw .bufferIdOutOfRange(id: id, queueSize: size) }
        var builder = PackedChainBuilder(chain: chain, memory: memory)
        let count = Int(entry >> 16)
        var position = Int(entry & 0xffff)
        var source = UnsafeRawPointer(descriptors)
        if let marks = recoveredStart, let copies = recoveredDescriptors, marks[Int(id)] != 0 {
            // Resubmitted once from its copy, contiguous (count <= size: it never wraps).
            source = copies + 16 * Int(marks[Int(id)] - 1)
            marks[Int(id)] = 0
            position = 0
        }
        for _ in 0..<count {
            let descriptor = source + 16 * position
            let address = UInt64(littleEndian: descriptor.loadUnaligned(as: UInt64.self))
            let length = UInt32(littleEndian: descriptor.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: descriptor.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
            if flags & VirtqueueLayout.descriptorFlagIndirect != 0 {
                guard count == 1 else { throw .indirectInChain }
                try walkIndirect(address: address, length: length, into: &builder)
            } else {
                try builder.append(address: address, length: length,
                                   writable: flags & VirtqueueLayout.descriptorFlagWrite != 0, memory: memory)
            }
            position += 1
            if position == Int(size) { position = 0 }
        }
        builder.finish(chain)
    }

    func walkIndirect(address: UInt64, length: UInt32, into builder: inout PackedChainBuilder) throws(VirtqueueError) {
        guard features.contains(.indirectDescriptors) else { throw .indirectNotNegotiated }
        let entries = length / UInt32(PackedVirtqueueLayout.descriptorSize)
        guard length != 0, length % UInt32(PackedVirtqueueLayout.descriptorSize) == 0,
              entries <= UInt32(VirtqueueLayout.maximumIndirectDescriptors)
        else { throw .invalidIndirectTableLength(length) }
        // Read as one piece: it must not cross a region boundary.
        guard let table = memory.translate(gpa: address, length: UInt64(length)) else {
            throw .indirectTableNotMapped(address: address, length: length)
        }
        for i in 0..<Int(entries) {
            let descriptor = UnsafeRawPointer(table + 16 * i)
            let bufferAddress = UInt64(littleEndian: descriptor.loadUnaligned(as: UInt64.self))
            let bufferLength = UInt32(littleEndian: descriptor.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: descriptor.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
            guard flags & VirtqueueLayout.descriptorFlagIndirect == 0 else { throw .nestedIndirect }
            try builder.append(address: bufferAddress, length: bufferLength,
                               writable: flags & VirtqueueLayout.descriptorFlagWrite != 0, memory: memory)
        }
    }
}

/// Fills a `DescriptorChain`'s spans one guest buffer at a time: checks order (readable
/// before writable), overflow and mapping, and translates through guest memory (fast path:
/// the largest region). Holds only raw pointers and integers, so building one costs no
/// reference counting. The split ring does the same inline in its own walk.
struct PackedChainBuilder {
    let spans: UnsafeMutablePointer<iovec>
    let capacity: Int
    let mainStart: UInt64
    let mainEnd: UInt64
    let mainHost: UnsafeMutableRawPointer?
    var spanCount = 0
    var readableSpanCount = 0
    var readableLength: UInt64 = 0
    var writableLength: UInt64 = 0

    init(chain: DescriptorChain, memory: GuestMemory) {
        spans = chain.spans
        capacity = chain.capacity
        if memory.entryCount > 0 {
            let main = memory.entries[0]
            mainStart = main.gpaStart
            mainEnd = main.gpaEnd
            mainHost = main.host
        } else {
            mainStart = 0
            mainEnd = 0
            mainHost = nil
        }
    }

    /// Zero-length buffers are skipped.
    mutating func append(address: UInt64, length: UInt32, writable: Bool, memory: GuestMemory) throws(VirtqueueError) {
        guard length > 0 else { return }
        guard !address.addingReportingOverflow(UInt64(length)).overflow else {
            throw .bufferAddressWraps(address: address, length: length)
        }
        if writable {
            writableLength += UInt64(length)
        } else {
            guard writableLength == 0 else { throw .readableAfterWritable }
            readableLength += UInt64(length)
        }
        // Each term is < 2^32 and checked as soon as it is added: no UInt64 overflow.
        guard readableLength + writableLength <= UInt64(UInt32.max) else { throw .totalLengthOverflow }
        if let host = mainHost, address >= mainStart, address &+ UInt64(length) <= mainEnd, spanCount < capacity {
            spans[spanCount] = iovec(iov_base: host + Int(address &- mainStart), iov_len: Int(length))
            spanCount += 1
            if !writable { readableSpanCount = spanCount }
            return
        }
        guard let count = memory.translateSpans(gpa: address, length: UInt64(length),
                                                into: spans + spanCount, capacity: capacity - spanCount)
        else {
            if memory.contains(gpa: address, length: UInt64(length)) { throw .tooManySpans(capacity: capacity) }
            throw .bufferNotMapped(address: address, length: length)
        }
        spanCount += count
        if !writable { readableSpanCount = spanCount }
    }

    func finish(_ chain: DescriptorChain) {
        chain.readableSpanCount = readableSpanCount
        chain.writableSpanCount = spanCount - readableSpanCount
        chain.readableLength = Int(readableLength)
        chain.writableLength = Int(writableLength)
    }
}
