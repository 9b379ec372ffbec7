/// Why a well-framed virtio-blk request is answered with an error status instead of being
/// executed. Plain integer payloads: creating one never allocates.
public enum VirtioBlkRequestProblem: Sendable, Equatable, CustomStringConvertible {
    /// Fewer than 16 device-readable bytes for the header.
    case headerTooShort(readableLength: Int)
    case unsupportedType(UInt32)
    /// DISCARD / WRITE_ZEROES without the feature negotiated.
    case featureNotNegotiated(type: UInt32)
    /// A write-type request on a read-only device.
    case readOnly
    /// Read/write data not a multiple of 512 bytes.
    case unalignedLength(Int)
    /// Request runs past the end of the disk (or its arithmetic would overflow).
    case outOfRange(sector: UInt64, length: Int)
    /// Discard / write-zeroes payload empty or not a multiple of 16 bytes.
    case invalidSegmentPayload(length: Int)
    case tooManySegments(count: Int, maximum: Int)
    case segmentOutOfRange(index: Int, sector: UInt64, sectorCount: UInt32)
    case segmentTooLarge(index: Int, sectorCount: UInt32, maximum: UInt32)
    case unsupportedSegmentFlags(index: Int, flags: UInt32)
    /// More data spans than the request buffers hold.
    case tooManyDataSpans

    /// The status byte this problem is answered with.
    public var status: VirtioBlkStatus {
        switch self {
        case .unsupportedType, .featureNotNegotiated, .tooManySegments, .unsupportedSegmentFlags:
            return .unsupported
        case .headerTooShort, .readOnly, .unalignedLength, .outOfRange, .invalidSegmentPayload,
             .segmentOutOfRange, .segmentTooLarge, .tooManyDataSpans:
            return .ioError
        }
    }

    public var description: String {
        switch self {
        case .headerTooShort(let n): return "virtio-blk request header too short (\(n) readable bytes)"
        case .unsupportedType(let t): return "virtio-blk request type \(t) unsupported"
        case .featureNotNegotiated(let t): return "virtio-blk request type \(t) without its feature negotiated"
        case .readOnly: return "virtio-blk write to a read-only device"
        case .unalignedLength(let n): return "virtio-blk data length \(n) is not a multiple of 512"
        case .outOfRange(let sector, let n): return "virtio-blk request at sector \(sector), \(n) bytes, is past the end of the disk"
        case .invalidSegmentPayload(let n): return "virtio-blk discard/write-zeroes payload of \(n) bytes"
        case .tooManySegments(let c, let m): return "virtio-blk discard/write-zeroes with \(c) segments, at most \(m)"
        case .segmentOutOfRange(let i, let s, let c): return "virtio-blk segment \(i) (sector \(s), \(c) sectors) is past the end of the disk"
        case .segmentTooLarge(let i, let c, let m): return "virtio-blk segment \(i) has \(c) sectors, at most \(m)"
        case .unsupportedSegmentFlags(let i, let f): return "virtio-blk segment \(i) has unsupported flags 0x\(String(f, radix: 16))"
        case .tooManyDataSpans: return "virtio-blk request has more data spans than supported"
        }
    }
}

/// A request that cannot even be answered: the chain has no device-writable byte for the
/// status. The driver broke the protocol; the device should be marked broken.
public enum VirtioBlkRequestError: Error, Sendable, Equatable, CustomStringConvertible {
    case cannotComplete(head: UInt16)

    public var description: String {
        switch self {
        case .cannotComplete(let head):
            return "virtio-blk request \(head) has no writable status byte; cannot complete it"
        }
    }
}
