import VhostUser
import VirtioBlk

/// Input: byte 0 = ring size code, byte 1 = flags (bit 0 indirect, bit 1 read-only,
/// bit 2 discard, bit 3 write-zeroes), byte 2 = segment capacity, bytes 3–10 = capacity in
/// sectors, bytes 11–14 = max discard/write-zeroes sectors, then the guest's memory as for
/// the descriptor-chain target. Every chain is parsed; accepted requests must stay inside
/// guest memory and within the disk.
func fuzzVirtioBlkRequest(_ input: UnsafeRawBufferPointer) {
    var bytes = FuzzBytes(input)
    let sizeCode = bytes.u8()
    let flags = bytes.u8()
    let segmentCapacity = Int(bytes.u8() % 8) + 1
    let capacitySectors = bytes.u64()
    let maxSectors = bytes.u32()
    let parser = VirtioBlkRequestParser(
        capacitySectors: capacitySectors, readOnly: flags & 2 != 0,
        discardEnabled: flags & 4 != 0, maxDiscardSectors: maxSectors, maxDiscardSegments: UInt32(segmentCapacity),
        writeZeroesEnabled: flags & 8 != 0, maxWriteZeroesSectors: maxSectors, maxWriteZeroesSegments: UInt32(segmentCapacity))
    let guest = FuzzGuest(contents: bytes.rest())
    var queue = guest.queue(sizeCode: sizeCode, features: flags & 1 != 0 ? .indirectDescriptors : [], lastAvailableIndex: 0)
    let chain = DescriptorChain(capacity: 64)
    let buffers = VirtioBlkRequestBuffers(dataSpanCapacity: 64, segmentCapacity: segmentCapacity)

    walkAvailableChains(&queue, guest: guest, chain: chain) { chain in
        guard let request = try? parser.parse(chain, into: buffers) else { return 0 }
        precondition(guest.holds(UnsafeRawPointer(request.statusByte), length: 1), "status byte outside guest memory")
        precondition(guest.holds(request.dataSpans), "data span outside guest memory")
        precondition(request.dataSpans.reduce(0, { $0 + $1.iov_len }) == request.dataLength, "data length disagrees with its spans")
        precondition(request.segments.count <= segmentCapacity, "more segments than room for them")
        switch request.operation {
        case .read(let sector), .write(let sector):
            if case .write = request.operation { precondition(flags & 2 == 0, "write accepted on a read-only disk") }
            precondition(request.dataLength % 512 == 0, "data not a whole number of sectors")
            let sectors = UInt64(request.dataLength / 512)
            precondition(sector <= capacitySectors && sectors <= capacitySectors - sector, "request beyond the disk")
        case .discard, .writeZeroes:
            for segment in request.segments {
                precondition(segment.sector <= capacitySectors
                             && UInt64(segment.sectorCount) <= capacitySectors - segment.sector, "segment beyond the disk")
            }
        case .getId:
            request.writeDeviceId(UnsafeRawBufferPointer(start: nil, count: 0))
        case .flush, .reject:
            break
        }
        request.complete(.ok)
        return request.usedLength(for: .ok)
    }
}
