import CSpindle
import Glibc
@testable import IOThreads
import Synchronization

/// Counts the completions an IOThread delivers to it, and remembers their tags.
final class CountingHandler: IOCompletionHandler, @unchecked Sendable {
    let completions = Atomic<Int>(0)
    let lastTag = Atomic<UInt64>(UInt64.max)
    func handleCompletion(tag: UInt64, result: Int32, flags: UInt32) {
        lastTag.store(tag, ordering: .relaxed)
        completions.wrappingAdd(1, ordering: .releasing)
    }
    func endOfBatch() {}
    var seen: Int { completions.load(ordering: .acquiring) }
}

/// A tiny semaphore over an eventfd.
final class EventSemaphore: @unchecked Sendable {
    let fd = eventfd(0, Int32(EFD_SEMAPHORE | EFD_CLOEXEC))
    func signal() { var one: UInt64 = 1; _ = write(fd, &one, 8) }
    func wait() { var value: UInt64 = 0; _ = read(fd, &value, 8) }
    deinit { close(fd) }
}

/// A value handed from the IOThread back to the test.
final class Box<T: Sendable>: @unchecked Sendable {
    var value: T?
}

/// A timespec the kernel reads when the timeout is submitted: it must stay put until then.
final class TimeoutStorage: @unchecked Sendable {
    let pointer = UnsafeMutablePointer<__kernel_timespec>.allocate(capacity: 1)
    deinit { pointer.deallocate() }
}

extension IOThread {
    /// Runs `body` on the thread and waits for it.
    func runAndWait<T: Sendable>(_ body: @escaping @Sendable (IOThread) -> T) -> T {
        let box = Box<T>()
        let done = EventSemaphore()
        post { thread in
            box.value = body(thread)
            done.signal()
        }
        done.wait()
        return box.value!
    }

    /// Queues a timeout of `milliseconds` whose CQE carries `token` (on the thread).
    func queueTimeout(milliseconds: Int, token: CompletionToken, storage: TimeoutStorage) {
        storage.pointer.pointee = __kernel_timespec(tv_sec: 0, tv_nsec: Int64(milliseconds) * 1_000_000)
        let sqe = context.sqe()!
        io_uring_prep_timeout(sqe, storage.pointer, 0, 0)
        sqe.pointee.user_data = token.rawValue
    }
}

/// Waits until `condition` holds, at most `milliseconds`.
func eventually(milliseconds: Int = 2_000, _ condition: () -> Bool) -> Bool {
    for _ in 0..<milliseconds {
        if condition() { return true }
        usleep(1_000)
    }
    return condition()
}
