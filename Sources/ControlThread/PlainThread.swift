import Glibc

/// Starts a plain pthread running `body`. Nonisolated on purpose: a closure written inside
/// actor-isolated code and handed to pthread_create would inherit that isolation and trap
/// when it runs on the new thread.
public enum PlainThread {
    public static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return thread
    }
}
