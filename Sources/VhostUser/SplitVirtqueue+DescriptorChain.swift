#if canImport(Glibc)
import Glibc
#endif

/// Walking a descriptor chain into host spans.
extension SplitVirtqueue {
    /// Follows the chain starting at `head` (from `popAvailable()`) and fills `chain` with
    /// host spans: device-readable first, then device-writable, each buffer translated
    /// through guest memory (a buffer may cross adjacent regions). Zero-length descriptors
    /// are skipped. Supports one level of indirection at the end of the chain when
    /// VIRTIO_F_RING_INDIRECT_DESC was negotiated.
    ///
    /// Every descriptor field is read exactly once, so a driver rewriting the table
    /// concurrently cannot make a check and a use disagree. On error `chain` is empty.
    public func walkChain(head: UInt16, into chain: DescriptorChain) throws(VirtqueueError) {
        chain.clear(head: head)
        guard head < size else { throw .headOutOfRange(head: head, queueSize: size) }

        let spans = chain.spans
        let mainRegion = memory.entryCount > 0 ? memory.entries[0] : nil
        let capacity = chain.capacity
        var table = UnsafeRawPointer(descriptors)
        var tableSize = UInt32(size)
        var index = head
        var visited: UInt32 = 0
        var indirect = false
        var spanCount = 0
        var readableSpanCount = 0
        var readableLength: UInt64 = 0
        var writableLength: UInt64 = 0

        while true {
            // A chain can visit each descriptor of its table at most once.
            visited += 1
            guard visited <= tableSize else { throw .chainTooLong(tableSize: tableSize) }

            let descriptor = table + VirtqueueLayout.descriptorSize * Int(index)
            let address = UInt64(littleEndian: descriptor.loadUnaligned(as: UInt64.self))
            let length = UInt32(littleEndian: descriptor.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: descriptor.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
            let next = UInt16(littleEndian: descriptor.loadUnaligned(fromByteOffset: 14, as: UInt16.self))

            if flags & VirtqueueLayout.descriptorFlagIndirect != 0 {
                guard features.contains(.indirectDescriptors) else { throw .indirectNotNegotiated }
                guard !indirect else { throw .nestedIndirect }
                guard flags & VirtqueueLayout.descriptorFlagNext == 0 else { throw .indirectWithNext }
                let entries = length / UInt32(VirtqueueLayout.descriptorSize)
                guard length != 0, length % UInt32(VirtqueueLayout.descriptorSize) == 0,
                      entries <= UInt32(VirtqueueLayout.maximumIndirectDescriptors)
                else { throw .invalidIndirectTableLength(length) }
                // The table is read as one piece, so it must not cross a region boundary.
                guard let indirectTable = memory.translate(gpa: address, length: UInt64(length)) else {
                    throw .indirectTableNotMapped(address: address, length: length)
                }
                table = UnsafeRawPointer(indirectTable)
                tableSize = entries
                index = 0
                visited = 0
                indirect = true
                continue
            }

            if length > 0 {
                guard !address.addingReportingOverflow(UInt64(length)).overflow else {
                    throw .bufferAddressWraps(address: address, length: length)
                }
                if flags & VirtqueueLayout.descriptorFlagWrite != 0 {
                    writableLength += UInt64(length)
                } else {
                    guard writableLength == 0 else { throw .readableAfterWritable }
                    readableLength += UInt64(length)
                }
                // Each term is < 2^32 and is checked as soon as it is added: no UInt64 overflow.
                guard readableLength + writableLength <= UInt64(UInt32.max) else { throw .totalLengthOverflow }
                // Fast path: the buffer lies in the largest region (normally all of RAM).
                if let main = mainRegion, address >= main.gpaStart, address &+ UInt64(length) <= main.gpaEnd,
                   spanCount < capacity {
                    spans[spanCount] = iovec(iov_base: main.host + Int(address &- main.gpaStart), iov_len: Int(length))
                    spanCount += 1
                    if writableLength == 0 { readableSpanCount = spanCount }
                } else {
                    guard let count = memory.translateSpans(gpa: address, length: UInt64(length),
                                                            into: spans + spanCount, capacity: capacity - spanCount)
                    else {
                        if memory.contains(gpa: address, length: UInt64(length)) {
                            throw .tooManySpans(capacity: capacity)
                        }
                        throw .bufferNotMapped(address: address, length: length)
                    }
                    spanCount += count
                    if writableLength == 0 { readableSpanCount = spanCount }
                }
            }

            guard flags & VirtqueueLayout.descriptorFlagNext != 0 else { break }
            guard UInt32(next) < tableSize else { throw .nextOutOfRange(next: next, tableSize: tableSize) }
            index = next
        }

        chain.readableSpanCount = readableSpanCount
        chain.writableSpanCount = spanCount - readableSpanCount
        chain.readableLength = Int(readableLength)
        chain.writableLength = Int(writableLength)
    }
}
