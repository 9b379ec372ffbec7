import BlockIO
import Glibc
import IOThreads
import Logging
import VhostUser
import Virtqueues

/// virtio-blk's side of a virtqueue server: turns a walked chain into a virtio-blk request
/// in a slot, fills the slot's BlockRequest and submits it through the device's
/// BlockBackend (iovecs pointing into guest memory), and on completion writes the status
/// byte and reports the used length. Answers GET_ID and rejected requests at once.
/// Admission is the BlockBackend's in-flight accounting.
///
/// Built on the control thread; used on the queue's IOThread only.
public final class VirtioBlkRequestHandler: VirtqueueRequestHandler, @unchecked Sendable {
    public typealias Unanswerable = VirtioBlkRequestError

    public let device: VirtioBlkDevice
    /// The device's BlockBackend. A strong `let`: calls through it borrow without reference
    /// counting, where an unowned(unsafe) reference is retained around every call.
    private let backend: BlockBackend
    private let logger: Logger
    /// Built on the IOThread in `prepare` (first touched there: its NUMA node).
    private var slots = VirtioBlkRequestSlots(count: 0)
    /// This queue's block in the export's statistics (see BlockStatsCounters.swift).
    let stats: BlockStatsCounters
    /// When each slot's request was submitted; built in `prepare` like the slots.
    private var slotClock = BlockStatsSlotClock(count: 0)

    public init(device: VirtioBlkDevice, logger: Logger, queue: Int = 0) {
        self.device = device
        backend = device.backend
        self.logger = logger
        stats = device.stats.counters(queue: queue)
    }

    deinit {
        slots.deallocate()
        slotClock.deallocate()
    }

    public var spansPerRequest: Int { VirtioBlkDevice.maxSpansPerRequest }
    public var inlineSpansPerRequest: Int { VirtioBlkDevice.inlineSpansPerRequest }
    public var memoryBytesPerSlot: Int { VirtioBlkRequestSlots.bytesPerSlot }

    public func prepare(slotCount: Int, handlerID: HandlerID) {
        slots.deallocate()
        slots = VirtioBlkRequestSlots(count: slotCount)
        slots.assignTokens(handler: handlerID)
        slotClock.deallocate()
        slotClock = BlockStatsSlotClock(count: slotCount)
    }

    public func queueMemoryChanged(by delta: Int) {
        device.queueMemoryChanged(by: delta)
    }

    public func discardSlots() {
        slots.deallocate()
        slots = VirtioBlkRequestSlots(count: 0)
        slotClock.deallocate()
        slotClock = BlockStatsSlotClock(count: 0)
    }

    // MARK: admission

    @inline(__always)
    public func beginBusyPeriod() -> Bool { backend.beginRequest() }

    @inline(__always)
    public var isQuiescing: Bool { backend.isQuiescing }

    @inline(__always)
    public func endBusyPeriod() { backend.endRequest() }

    // MARK: requests

    public func start(slot: Int, chain: DescriptorChain, on context: IOContext) -> VirtqueueRequestStart<VirtioBlkRequestError> {
        let parser = device.parser()
        let outcome: Result<VirtioBlkRequest, VirtioBlkRequestError> = slots.withBuffers(slot) { buffers in
            do throws(VirtioBlkRequestError) {
                return .success(try parser.parse(chain, into: buffers))
            } catch {
                return .failure(error)
            }
        }
        let parsed: VirtioBlkRequest
        switch outcome {
        case .success(let request): parsed = request
        case .failure(let error): return .unanswerable(error)
        }
        slots.parsedRequest(slot).pointee = parsed
        let request = slots.blockRequest(slot)
        request.pointee.fua = false
        request.pointee.mayUnmap = false
        switch parsed.operation {
        case .reject(let problem):
            logger.debug("request rejected: \(problem)")
            countRejected(parsed, problem, at: context.batchNanoseconds)
            return .finished(usedLength: answer(parsed, problem.status))
        case .getId:
            let written = device.serial.withUnsafeBytes { parsed.writeDeviceId($0) }
            stats.answeredAtOnce(.other, bytes: UInt64(written), at: context.batchNanoseconds)
            return .finished(usedLength: answer(parsed, .ok))
        case .read(let sector):
            request.pointee.operation = .read
            request.pointee.offset = sector << 9
            request.pointee.length = UInt64(parsed.dataLength)
        case .write(let sector):
            request.pointee.operation = .write
            request.pointee.offset = sector << 9
            request.pointee.length = UInt64(parsed.dataLength)
            request.pointee.fua = !device.writeCacheEnabled
        case .flush:
            request.pointee.operation = .flush
            request.pointee.offset = 0
            request.pointee.length = 0
        case .discard, .writeZeroes:
            // max_discard_seg = max_write_zeroes_seg = 1: one range per request.
            guard let segment = parsed.segments.first else {
                stats.invalid(parsed.operation == .discard ? .discard : .writeZeroes)
                return .finished(usedLength: answer(parsed, .ioError))
            }
            request.pointee.operation = parsed.operation == .discard ? .discard : .writeZeroes
            request.pointee.offset = segment.sector << 9
            request.pointee.length = UInt64(segment.sectorCount) << 9
            request.pointee.mayUnmap = segment.unmap
        }
        request.pointee.iov = parsed.dataSpans.baseAddress
        request.pointee.iovcnt = Int32(parsed.dataSpans.count)
        // The IOThread's batch clock, not a clock read per request (IOContext.batchNanoseconds
        // says what resolution that gives the latencies).
        let submittedAt = context.batchNanoseconds
        slotClock.start(slot, at: submittedAt)
        stats.submitted()
        switch backend.submit(request, on: context) {
        case .queued: return .started
        case .done(let result):
            countCompleted(request, result: result, submittedAt: submittedAt, now: submittedAt)
            return .finished(usedLength: answer(parsed, status(for: result)))
        }
    }

    public func complete(tag: UInt64, result: Int32, on context: IOContext) -> VirtqueueFinishedRequest? {
        let slot = Int(tag)
        guard slot < slots.count else { return nil }
        let request = slots.blockRequest(slot)
        guard let final = backend.complete(request, result: result, on: context) else { return nil }
        return finished(slot: slot, result: final, at: context.batchNanoseconds)
    }

    @inline(__always)
    public func release(slot: Int) {
        slots.release(slot)
    }

    /// A block request finished with `result`: its status and used length.
    @inline(__always)
    private func finished(slot: Int, result: Int32, at now: UInt64) -> VirtqueueFinishedRequest? {
        guard let parsed = slots.parsedRequest(slot).pointee else { return nil }
        countCompleted(slots.blockRequest(slot), result: result, submittedAt: slotClock.startTime(slot), now: now)
        return VirtqueueFinishedRequest(slot: slot, usedLength: answer(parsed, status(for: result)))
    }

    /// Writes the status byte; returns the used length to report.
    @inline(__always)
    private func answer(_ parsed: VirtioBlkRequest, _ status: VirtioBlkStatus) -> UInt32 {
        parsed.complete(status)
        return parsed.usedLength(for: status)
    }

    /// A BlockBackend result as a virtio-blk status.
    @inline(__always)
    private func status(for result: Int32) -> VirtioBlkStatus {
        if result >= 0 { return .ok }
        if result != -EIO { logger.debug("request failed: \(String(cString: strerror(-result)))") }
        return result == -EOPNOTSUPP ? .unsupported : .ioError
    }
}
