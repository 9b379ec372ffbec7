import BlockCommon
import BlockIO

/// What the request handler counts (the counters: BlockStatsCounters.swift). On the
/// queue's IOThread, per request: a few loads and stores to the queue's own counter block.
/// Times are the IOThread's batch clock (`IOContext.batchNanoseconds`): no clock read per
/// request; a latency is measured between the batches a request started and completed in.
extension VirtioBlkRequestHandler {
    /// A submitted request's final result. Writes, write-zeroes and discards move the
    /// export's highest written offset.
    @inline(__always)
    func countCompleted(_ request: UnsafeMutablePointer<BlockRequest>, result: Int32, submittedAt start: UInt64, now: UInt64) {
        let kind: BlockStatsOperation
        switch request.pointee.operation {
        case .read: kind = .read
        case .write: kind = .write
        case .flush: kind = .flush
        case .discard: kind = .discard
        case .writeZeroes: kind = .writeZeroes
        }
        let end = kind == .read || kind == .flush ? 0 : request.pointee.offset &+ request.pointee.length
        stats.completed(kind, bytes: request.pointee.length, end: end, failed: result < 0,
                        startedAt: start, now: now)
    }

    /// A request the parser refused: invalid, except a range refused because the export
    /// was revoked (capacity 0, no medium): the guest did nothing wrong, so it failed.
    @inline(__always)
    func countRejected(_ parsed: VirtioBlkRequest, _ problem: VirtioBlkRequestProblem, at now: UInt64) {
        let kind = Self.statsKind(ofRequestType: parsed.type)
        switch problem {
        case .outOfRange, .segmentOutOfRange:
            if device.capacitySectors == 0 {
                stats.failedAtOnce(kind, at: now)
            } else {
                stats.invalid(kind)
            }
        default:
            stats.invalid(kind)
        }
    }

    /// The statistics' kind of a raw virtio-blk request type.
    @inline(__always)
    static func statsKind(ofRequestType type: UInt32) -> BlockStatsOperation {
        switch type {
        case VirtioBlkRequestType.read: .read
        case VirtioBlkRequestType.write: .write
        case VirtioBlkRequestType.flush: .flush
        case VirtioBlkRequestType.discard: .discard
        case VirtioBlkRequestType.writeZeroes: .writeZeroes
        default: .other
        }
    }
}
