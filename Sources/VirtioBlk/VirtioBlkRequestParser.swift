#if canImport(Glibc)
import Glibc
#endif
import VhostUser

/// Turns walked descriptor chains into virtio-blk requests, checking everything the guest
/// wrote against the device's limits. Pure and allocation-free: results point into guest
/// memory and into caller-provided `VirtioBlkRequestBuffers`.
///
/// Framing (virtio 1.x §5.2.6, any layout): the first 16 device-readable bytes are the
/// header, the last device-writable byte is the status; data is what lies between on the
/// side the request type implies. Descriptor boundaries carry no meaning.
public struct VirtioBlkRequestParser: Sendable {
    /// Disk size in 512-byte sectors.
    public var capacitySectors: UInt64
    public var readOnly: Bool
    public var discardEnabled: Bool
    public var maxDiscardSectors: UInt32
    public var maxDiscardSegments: UInt32
    public var writeZeroesEnabled: Bool
    public var maxWriteZeroesSectors: UInt32
    public var maxWriteZeroesSegments: UInt32

    public init(capacitySectors: UInt64, readOnly: Bool = false,
                discardEnabled: Bool = false, maxDiscardSectors: UInt32 = 0, maxDiscardSegments: UInt32 = 0,
                writeZeroesEnabled: Bool = false, maxWriteZeroesSectors: UInt32 = 0, maxWriteZeroesSegments: UInt32 = 0) {
        self.capacitySectors = capacitySectors
        self.readOnly = readOnly
        self.discardEnabled = discardEnabled
        self.maxDiscardSectors = maxDiscardSectors
        self.maxDiscardSegments = maxDiscardSegments
        self.writeZeroesEnabled = writeZeroesEnabled
        self.maxWriteZeroesSectors = maxWriteZeroesSectors
        self.maxWriteZeroesSegments = maxWriteZeroesSegments
    }

    /// Limits from the config space the driver saw and the features it accepted.
    public init(config: VirtioBlkConfig, negotiatedFeatures features: UInt64) {
        func has(_ bit: UInt64) -> Bool { features & VirtioBlkFeature.mask(bit) != 0 }
        self.init(capacitySectors: config.capacity,
                  readOnly: has(VirtioBlkFeature.readOnly),
                  discardEnabled: has(VirtioBlkFeature.discard),
                  maxDiscardSectors: config.maxDiscardSectors,
                  maxDiscardSegments: config.maxDiscardSegments,
                  writeZeroesEnabled: has(VirtioBlkFeature.writeZeroes),
                  maxWriteZeroesSectors: config.maxWriteZeroesSectors,
                  maxWriteZeroesSegments: config.maxWriteZeroesSegments)
    }

    /// Parses `chain`. Throws only when no status byte exists (the request cannot be
    /// completed); every other problem becomes `.reject(problem)` with a status to write.
    public func parse(_ chain: DescriptorChain, into buffers: VirtioBlkRequestBuffers) throws(VirtioBlkRequestError) -> VirtioBlkRequest {
        let writable = chain.writableSpans
        guard let last = writable.last, let lastBase = last.iov_base, last.iov_len > 0 else {
            throw .cannotComplete(head: chain.head)
        }
        let status = (lastBase + (last.iov_len - 1)).assumingMemoryBound(to: UInt8.self)
        var request = VirtioBlkRequest(head: chain.head, type: 0, operation: .flush,
                                       dataSpans: UnsafeMutableBufferPointer(start: buffers.dataSpans, count: 0),
                                       dataLength: 0,
                                       segments: UnsafeBufferPointer(start: buffers.segments, count: 0),
                                       statusByte: status)
        request.operation = classify(chain, buffers: buffers, request: &request)
        return request
    }

    /// Fills `request`'s type, data and segments; returns the operation (or the rejection).
    private func classify(_ chain: DescriptorChain, buffers: VirtioBlkRequestBuffers,
                          request: inout VirtioBlkRequest) -> VirtioBlkOperation {
        let header = VirtioBlkLimits.headerSize
        var raw: (UInt32, UInt32, UInt64) = (0, 0, 0)
        let readable = chain.readableSpans
        let type: UInt32
        let sector: UInt64
        if let first = readable.first, let base = first.iov_base, first.iov_len >= header {
            // The usual layout: the whole header in the first descriptor.
            type = UInt32(littleEndian: base.loadUnaligned(as: UInt32.self))
            sector = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        } else {
            let gotHeader = withUnsafeMutableBytes(of: &raw) { bytes in
                IOVecSpans.gather(readable, offset: 0, count: header, into: bytes.baseAddress!)
            }
            guard gotHeader else { return .reject(.headerTooShort(readableLength: chain.readableLength)) }
            type = UInt32(littleEndian: raw.0)
            sector = UInt64(littleEndian: raw.2)
        }
        request.type = type
        // Bytes before the status byte, on the writable side; after the header, readable side.
        let writableData = chain.writableLength - 1
        let readableData = chain.readableLength - header

        switch type {
        case VirtioBlkRequestType.read:
            if let problem = checkReadWrite(sector: sector, length: writableData) { return .reject(problem) }
            guard setData(&request, from: chain.writableSpans, offset: 0, length: writableData, buffers, chain) else {
                return .reject(.tooManyDataSpans)
            }
            return .read(sector: sector)
        case VirtioBlkRequestType.write:
            if readOnly { return .reject(.readOnly) }
            if let problem = checkReadWrite(sector: sector, length: readableData) { return .reject(problem) }
            guard setData(&request, from: readable, offset: header, length: readableData, buffers, chain) else {
                return .reject(.tooManyDataSpans)
            }
            return .write(sector: sector)
        case VirtioBlkRequestType.flush:
            return .flush
        case VirtioBlkRequestType.getId:
            guard setData(&request, from: chain.writableSpans, offset: 0, length: writableData, buffers, chain) else {
                return .reject(.tooManyDataSpans)
            }
            return .getId
        case VirtioBlkRequestType.discard:
            guard discardEnabled else { return .reject(.featureNotNegotiated(type: type)) }
            if readOnly { return .reject(.readOnly) }
            if let problem = readSegments(&request, readable, length: readableData, buffers,
                                          maxSegments: maxDiscardSegments, maxSectors: maxDiscardSectors,
                                          allowedFlags: 0) {
                return .reject(problem)
            }
            return .discard
        case VirtioBlkRequestType.writeZeroes:
            guard writeZeroesEnabled else { return .reject(.featureNotNegotiated(type: type)) }
            if readOnly { return .reject(.readOnly) }
            if let problem = readSegments(&request, readable, length: readableData, buffers,
                                          maxSegments: maxWriteZeroesSegments, maxSectors: maxWriteZeroesSectors,
                                          allowedFlags: VirtioBlkLimits.writeZeroesFlagUnmap) {
                return .reject(problem)
            }
            return .writeZeroes
        default:
            return .reject(.unsupportedType(type))
        }
    }

    /// IN/OUT: whole sectors, inside the disk, computed without overflow.
    private func checkReadWrite(sector: UInt64, length: Int) -> VirtioBlkRequestProblem? {
        guard length % VirtioBlkLimits.sectorSize == 0 else { return .unalignedLength(length) }
        let sectors = UInt64(length) >> VirtioBlkLimits.sectorShift
        guard sector <= capacitySectors, sectors <= capacitySectors - sector else {
            return .outOfRange(sector: sector, length: length)
        }
        return nil
    }

    private func setData(_ request: inout VirtioBlkRequest, from spans: UnsafeMutableBufferPointer<iovec>,
                         offset: Int, length: Int, _ buffers: VirtioBlkRequestBuffers, _ chain: DescriptorChain) -> Bool {
        let ownRoom = buffers.dataSpanCapacity > 0
        let destination = ownRoom ? buffers.dataSpans : chain.deviceSpans
        guard let count = IOVecSpans.slice(spans, offset: offset, length: length,
                                           into: destination, capacity: ownRoom ? buffers.dataSpanCapacity : chain.capacity)
        else { return false }
        request.dataSpans = UnsafeMutableBufferPointer(start: destination, count: count)
        request.dataLength = length
        return true
    }

    /// DISCARD / WRITE_ZEROES payload: `length / 16` segments after the header.
    private func readSegments(_ request: inout VirtioBlkRequest, _ readable: UnsafeMutableBufferPointer<iovec>,
                              length: Int, _ buffers: VirtioBlkRequestBuffers,
                              maxSegments: UInt32, maxSectors: UInt32, allowedFlags: UInt32) -> VirtioBlkRequestProblem? {
        let size = VirtioBlkLimits.segmentSize
        guard length > 0, length % size == 0 else { return .invalidSegmentPayload(length: length) }
        let count = length / size
        let maximum = min(Int(maxSegments), buffers.segmentCapacity)
        guard count <= maximum else { return .tooManySegments(count: count, maximum: maximum) }
        for index in 0..<count {
            var raw: (UInt64, UInt32, UInt32) = (0, 0, 0)
            let offset = VirtioBlkLimits.headerSize + index * size
            let ok = withUnsafeMutableBytes(of: &raw) { bytes in
                IOVecSpans.gather(readable, offset: offset, count: size, into: bytes.baseAddress!)
            }
            // Cannot fail: the readable length was checked above.
            guard ok else { return .invalidSegmentPayload(length: length) }
            let segment = VirtioBlkSegment(sector: UInt64(littleEndian: raw.0),
                                           sectorCount: UInt32(littleEndian: raw.1),
                                           flags: UInt32(littleEndian: raw.2))
            guard segment.flags & ~allowedFlags == 0 else {
                return .unsupportedSegmentFlags(index: index, flags: segment.flags)
            }
            guard segment.sectorCount <= maxSectors else {
                return .segmentTooLarge(index: index, sectorCount: segment.sectorCount, maximum: maxSectors)
            }
            guard segment.sector <= capacitySectors,
                  UInt64(segment.sectorCount) <= capacitySectors - segment.sector else {
                return .segmentOutOfRange(index: index, sector: segment.sector, sectorCount: segment.sectorCount)
            }
            buffers.segments[index] = segment
        }
        request.segments = UnsafeBufferPointer(start: buffers.segments, count: count)
        return nil
    }
}
