#if canImport(Glibc)
import Glibc
#endif
import VhostUser

/// One discard / write-zeroes range from the request payload.
public struct VirtioBlkSegment: Sendable, Hashable {
    public var sector: UInt64
    public var sectorCount: UInt32
    public var flags: UInt32
    public init(sector: UInt64, sectorCount: UInt32, flags: UInt32) {
        self.sector = sector
        self.sectorCount = sectorCount
        self.flags = flags
    }
    /// VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: the device may deallocate instead of writing zeroes.
    public var unmap: Bool { flags & VirtioBlkLimits.writeZeroesFlagUnmap != 0 }
}

/// What a parsed request asks for.
public enum VirtioBlkOperation: Sendable, Equatable {
    /// Read into `dataSpans` (VIRTIO_BLK_T_IN).
    case read(sector: UInt64)
    /// Write from `dataSpans` (VIRTIO_BLK_T_OUT).
    case write(sector: UInt64)
    case flush
    /// Answer with the device's serial via `writeDeviceId(_:)`.
    case getId
    /// Discard the ranges in `segments`.
    case discard
    /// Zero the ranges in `segments` (each may allow unmapping).
    case writeZeroes
    /// Do nothing but complete with `problem.status`.
    case reject(VirtioBlkRequestProblem)
}

/// Preallocated room for one request's data spans and segments (one per request slot).
/// With `dataSpanCapacity` 0 the parser puts the data spans in the chain's `deviceSpans`
/// (room for as many spans as the chain holds): what request slots do, so that a slot needs
/// no room of its own for the longest chain.
public final class VirtioBlkRequestBuffers: @unchecked Sendable {
    public let dataSpanCapacity: Int
    public let segmentCapacity: Int
    let dataSpans: UnsafeMutablePointer<iovec>
    let segments: UnsafeMutablePointer<VirtioBlkSegment>

    /// Size `dataSpanCapacity` like the descriptor chains you parse, so data spans always fit
    /// (or 0: they go to the chain's `deviceSpans`).
    public init(dataSpanCapacity: Int = DescriptorChain.defaultCapacity, segmentCapacity: Int = 1) {
        precondition(dataSpanCapacity >= 0 && segmentCapacity > 0)
        self.dataSpanCapacity = dataSpanCapacity
        self.segmentCapacity = segmentCapacity
        dataSpans = .allocate(capacity: dataSpanCapacity)
        dataSpans.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: dataSpanCapacity)
        segments = .allocate(capacity: segmentCapacity)
        segments.initialize(repeating: VirtioBlkSegment(sector: 0, sectorCount: 0, flags: 0), count: segmentCapacity)
    }

    deinit {
        dataSpans.deallocate()
        segments.deallocate()
    }
}

/// A parsed virtio-blk request: pointers into guest memory and into its
/// `VirtioBlkRequestBuffers`, valid while both (and the chain's GuestMemory) live and until
/// the buffers are reused. Owned by one thread at a time.
public struct VirtioBlkRequest: @unchecked Sendable {
    /// Head descriptor index, for the used ring.
    public var head: UInt16
    /// The raw request type from the header (0 if the header was unreadable).
    public var type: UInt32
    public var operation: VirtioBlkOperation
    /// The data buffers, trimmed to the data: hand them to readv/writev as they are.
    public var dataSpans: UnsafeMutableBufferPointer<iovec>
    public var dataLength: Int
    /// Discard / write-zeroes ranges (empty otherwise), validated against the disk size.
    public var segments: UnsafeBufferPointer<VirtioBlkSegment>
    /// The status byte in guest memory (the last device-writable byte of the chain).
    public let statusByte: UnsafeMutablePointer<UInt8>

    /// Writes the status byte. Call once the operation finished, before `addUsed`.
    @inlinable
    public func complete(_ status: VirtioBlkStatus) {
        statusByte.pointee = status.rawValue
    }

    /// The used-ring length to report: data written to the driver plus the status byte.
    @inlinable
    public func usedLength(for status: VirtioBlkStatus) -> UInt32 {
        switch operation {
        case .read where status == .ok, .getId where status == .ok:
            return UInt32(truncatingIfNeeded: dataLength) + 1
        default:
            return 1
        }
    }

    /// Answers GET_ID: writes up to 20 bytes of `serial` (zero-padded to 20, or cut to the
    /// driver's buffer). Returns the bytes written.
    @discardableResult
    public func writeDeviceId(_ serial: UnsafeRawBufferPointer) -> Int {
        var id: (UInt64, UInt64, UInt32) = (0, 0, 0)  // VIRTIO_BLK_ID_BYTES of zeros
        return withUnsafeMutableBytes(of: &id) { raw in
            raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: serial.prefix(VirtioBlkLimits.idBytes)))
            let count = min(VirtioBlkLimits.idBytes, dataLength)
            return IOVecSpans.scatter(UnsafeRawBufferPointer(rebasing: raw.prefix(count)), into: dataSpans)
        }
    }
}
