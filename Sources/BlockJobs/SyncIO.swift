import BlockIO
import CSpindle
import Glibc
import IOThreads

/// One request at a time through a driver's data path, waiting for its completion on the
/// copier's own ring.
struct SyncIO {
    let context: IOContext
    let request: UnsafeMutablePointer<BlockRequest>
    let buffer: UnsafeMutableRawPointer

    func run(_ operation: BlockOperation, offset: UInt64, length: UInt64, on driver: any BlockDriverIO) -> Int32 {
        var iov = iovec(iov_base: buffer, iov_len: Int(length))
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            request.pointee.operation = operation
            request.pointee.fua = false
            request.pointee.offset = offset
            request.pointee.length = length
            request.pointee.iov = operation == .flush ? nil : iovPointer
            request.pointee.iovcnt = operation == .flush ? 0 : 1
            request.pointee.token = CompletionToken(rawValue: 1)
            switch driver.submit(request, on: context) {
            case .done(let result): return result
            case .queued: break
            }
            while true {
                var cqe: UnsafeMutablePointer<io_uring_cqe>?
                let rc = io_uring_submit_and_wait(context.ring, 1)
                if rc < 0 && rc != -EINTR && rc != -EAGAIN { return rc }
                guard io_uring_peek_cqe(context.ring, &cqe) == 0, let cqe else { continue }
                let result = cqe.pointee.res
                io_uring_cqe_seen(context.ring, cqe)
                if let final = driver.complete(request, result: result, on: context) { return final }
            }
        }
    }
}
