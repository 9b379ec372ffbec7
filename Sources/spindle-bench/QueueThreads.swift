#if canImport(Glibc)
import Glibc
#endif

/// Starts and joins the queue threads (plain pthreads: the hot loop must not run on a
/// cooperative executor).
enum QueueThreads {
    static func start(_ worker: QueueWorker) throws(BenchFailure) -> pthread_t {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(worker).toOpaque()
        let code = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            let worker = Unmanaged<QueueWorker>.fromOpaque(raw).takeRetainedValue()
            worker.run()
            return nil
        }, context)
        guard code == 0 else {
            Unmanaged<QueueWorker>.fromOpaque(context).release()
            throw BenchFailure("cannot start a queue thread: \(String(cString: strerror(code)))")
        }
        return thread
    }

    static func join(_ thread: pthread_t) {
        pthread_join(thread, nil)
    }
}

/// A failed run: one line for stderr.
struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
