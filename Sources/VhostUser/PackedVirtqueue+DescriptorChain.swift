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
    /// The second step of the two-step way (`popAvailable()` first); the server takes buffers
    /// with `takeAvailable(into:)`, which walks once. Resubmissions from the inflight region
    /// (ids a previous process left in flight) are walked here, from their copies.
    public func walkBuffer(id: UInt16, into chain: DescriptorChain) throws(VirtqueueError) {
        chain.clear(head: id)
        guard id < size else { throw .bufferIdOutOfRange(id: id, queueSize: size) }
        let entry = buffers[Int(id)]
        guard entry != 0 else { throw .bufferIdOutOfRange(id: id, queueSize: size) }
        var writer = PackedSpanWriter(chain: chain, memory: memory)
        let count = Int(entry >> 16)
        var position = Int(entry & 0xffff)
        var source = UnsafeRawPointer(descriptors)
        var fromCopy = false
        if let marks = recoveredStart, let copies = recoveredDescriptors, marks[Int(id)] != 0 {
            // Resubmitted once from its copy, contiguous (count <= size: it never wraps).
            source = copies + 16 * Int(marks[Int(id)] - 1)
            fromCopy = true
            position = 0
        }
        for _ in 0..<count {
            let descriptor = source + 16 * position
            let address = UInt64(littleEndian: descriptor.loadUnaligned(as: UInt64.self))
            let length = UInt32(littleEndian: descriptor.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: descriptor.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
            if flags & VirtqueueLayout.descriptorFlagIndirect != 0 {
                guard count == 1 else { throw .indirectInChain }
                try walkIndirect(address: address, length: length, into: &writer)
            } else {
                try writer.append(address: address, length: length,
                                  writable: flags & VirtqueueLayout.descriptorFlagWrite != 0, memory: memory)
            }
            position += 1
            if position == Int(size) { position = 0 }
        }
        writer.finish(chain, head: id)
        // Only a complete walk uses the copy up: one that ran out of spans may be read again.
        if fromCopy { recoveredStart?[Int(id)] = 0 }
    }

    /// A lone INDIRECT descriptor's table: every entry used in order, no table in a table.
    func walkIndirect(address: UInt64, length: UInt32, into writer: inout PackedSpanWriter) throws(VirtqueueError) {
        let table = try Self.indirectTable(address: address, length: length, memory: memory, features: features)
        for i in 0..<Int(length) / PackedVirtqueueLayout.descriptorSize {
            let descriptor = table + 16 * i
            let bufferAddress = UInt64(littleEndian: descriptor.loadUnaligned(as: UInt64.self))
            let bufferLength = UInt32(littleEndian: descriptor.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: descriptor.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
            guard flags & VirtqueueLayout.descriptorFlagIndirect == 0 else { throw .nestedIndirect }
            try writer.append(address: bufferAddress, length: bufferLength,
                              writable: flags & VirtqueueLayout.descriptorFlagWrite != 0, memory: memory)
        }
    }
}
