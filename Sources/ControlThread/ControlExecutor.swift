import CSpindle
import Glibc
import Synchronization

/// The control thread: one dedicated pthread that waits in epoll for its watched fds
/// (listening sockets, vhost-user connections, notifications from IOThreads) and runs the
/// ControlActor's jobs. Jobs arrive from any thread through a locked queue and an eventfd.
public final class ControlExecutor: SerialExecutor, @unchecked Sendable {
    public static let shared = ControlExecutor()

    private let epollFD: Int32
    private let wakeFD: Int32
    private let pendingJobs = PosixMutex<[UnownedJob]>([])
    private let threadID = Atomic<pthread_t>(0)

    // Only touched on the control thread.
    private var watches: [UInt64: FileDescriptorWatch] = [:]
    private var nextWatchID: UInt64 = 1

    private init() {
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        precondition(epollFD >= 0 && wakeFD >= 0, "cannot create the control thread's epoll/eventfd: errno \(errno)")
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = 0
        precondition(epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event) == 0)
        startThread()
    }

    public var isCurrentThread: Bool {
        let id = threadID.load(ordering: .acquiring)
        return id != 0 && pthread_equal(id, pthread_self()) != 0
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        pendingJobs.withLock { $0.append(unowned) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    public func checkIsolated() {
        precondition(isCurrentThread, "expected to run on the control thread")
    }

    // MARK: fd watches (control thread only)

    /// Calls `handler` on the control thread whenever `fd` has one of `events` (EPOLLIN, ...).
    /// EPOLLHUP and EPOLLERR are always reported. The handler is dropped by `unwatch`.
    @ControlActor
    public func watch(fd: Int32, events: UInt32, handler: @escaping @ControlActor (UInt32) -> Void) throws(ControlLoopError) -> FileDescriptorWatch {
        let id = nextWatchID
        nextWatchID += 1
        var event = epoll_event()
        event.events = events
        event.data.u64 = id
        guard epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) == 0 else {
            throw ControlLoopError(message: "cannot watch fd \(fd): \(String(cString: strerror(errno)))")
        }
        let watch = FileDescriptorWatch(id: id, fd: fd, handler: handler)
        watches[id] = watch
        return watch
    }

    /// Stops watching. Must be called before the fd is closed.
    @ControlActor
    public func unwatch(_ watch: FileDescriptorWatch) {
        guard watches.removeValue(forKey: watch.id) != nil else { return }
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, watch.fd, nil)
    }

    /// Changes the events a watch waits for (e.g. to stop reading while a reply is pending).
    @ControlActor
    public func modify(_ watch: FileDescriptorWatch, events: UInt32) {
        var event = epoll_event()
        event.events = events
        event.data.u64 = watch.id
        _ = epoll_ctl(epollFD, EPOLL_CTL_MOD, watch.fd, &event)
    }

    // MARK: the loop

    private func startThread() {
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attr, { raw in
            let executor = Unmanaged<ControlExecutor>.fromOpaque(raw!).takeRetainedValue()
            executor.threadID.store(pthread_self(), ordering: .releasing)
            _ = spindle_set_thread_name("spindle-control")
            executor.runLoop()
        }, context)
        precondition(rc == 0, "cannot start the control thread: \(rc)")
        // Jobs enqueued before the thread records its id are simply run once it does.
        while threadID.load(ordering: .acquiring) == 0 { sched_yield() }
    }

    private func runLoop() -> Never {
        let capacity = 64
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
        while true {
            let n = epoll_wait(epollFD, events, Int32(capacity), -1)
            if n < 0 { continue }  // EINTR
            for i in 0..<Int(n) {
                let id = events[i].data.u64
                if id == 0 {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                    runPendingJobs()
                } else {
                    let mask = events[i].events
                    // The watch may have been removed by an earlier handler in this batch.
                    ControlActor.assumeIsolated {
                        if let watch = self.watches[id] { watch.handler(mask) }
                    }
                }
            }
        }
    }

    private func runPendingJobs() {
        while true {
            let jobs = pendingJobs.withLock { queue -> [UnownedJob] in
                let taken = queue
                queue.removeAll(keepingCapacity: true)
                return taken
            }
            if jobs.isEmpty { return }
            for job in jobs { job.runSynchronously(on: asUnownedSerialExecutor()) }
        }
    }
}

public struct ControlLoopError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// A registration of an fd with the control loop; keep it to unwatch later.
public final class FileDescriptorWatch: @unchecked Sendable {
    let id: UInt64
    public let fd: Int32
    let handler: @ControlActor (UInt32) -> Void
    init(id: UInt64, fd: Int32, handler: @escaping @ControlActor (UInt32) -> Void) {
        self.id = id
        self.fd = fd
        self.handler = handler
    }
}
