import Foundation
import Testing
import VhostUser
@testable import VhostUserFrontend

/// Dirty logging against real backends (qemu-storage-daemon through libvhost-user, and
/// Spindle), in QEMU's orders: which guest pages the backend marks for reads and writes,
/// nothing once logging stops, LOG_ALL switched off and on again, and a log replaced while
/// I/O runs. A backend that does not offer dirty logging has its cases cancelled (skipped),
/// with the reason.
@Suite(.serialized, .enabled(if: !BackendProcess.Kind.available.isEmpty, "neither qemu-storage-daemon nor spindle is available"))
struct DirtyLogBackendTests {
    static let slots = 4

    @Test(arguments: BackendProcess.Kind.available, [DirtyLogging.onRequest, .fromDeviceStart])
    func readsAndWritesMarkExactlyTheirPages(backend kind: BackendProcess.Kind, start mode: DirtyLogging) throws {
        let backend = try BackendProcess.start(kind)
        defer { backend.stop() }
        let frontend = try connect(backend, mode)
        if mode == .onRequest {
            #expect(frontend.dirtyLog == nil)
            try frontend.startDirtyLog()
        }
        let log = try #require(frontend.dirtyLog)
        var queue = frontend.queues[0]
        let pages = QueuePages(queue, frontend.memory)
        // Setting the ring up may write the used ring (flags, avail_event), nothing else.
        #expect(Set(log.harvestPages()).isSubset(of: pages.used))

        #expect(try completeRequest(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)
        #expect(harvest(log, until: pages.data(0).union(pages.written)) == pages.data(0).union(pages.written),
                "a read marks its data, its status byte and the used ring")
        #expect(try completeRequest(&queue, slot: 1, type: .write, sector: 8, bytes: 4096) == BlkStatus.ok)
        #expect(harvest(log, until: pages.written) == pages.written, "a write marks only its status byte and the used ring")
        #expect(try completeRequest(&queue, slot: 2, type: .read, sector: 16, bytes: 4096) == BlkStatus.ok)
        #expect(try completeRequest(&queue, slot: 3, type: .read, sector: 24, bytes: 4096) == BlkStatus.ok)
        let twoReads = pages.data(2).union(pages.data(3)).union(pages.written)
        #expect(harvest(log, until: twoReads) == twoReads)
        #expect(Set(log.harvestPages()).isSubset(of: pages.used), "a harvest clears")

        // Stopped as QEMU stops it (no waiting); once the backend has handled that, no marks.
        let stopped = try #require(try frontend.stopDirtyLog())
        try frontend.synchronize()
        _ = stopped.harvestPages()
        #expect(try completeRequest(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)
        #expect(try completeRequest(&queue, slot: 1, type: .write, sector: 8, bytes: 4096) == BlkStatus.ok)
        #expect(stopped.dirtyPages().isEmpty, "pages marked after logging stopped")
        try frontend.shutdown(finalQueues: [queue])
    }

    /// LOG_ALL off and on again the way QEMU does it. On again only after a new log was
    /// shared: QEMU frees the log whenever logging stops and shares a new one before LOG_ALL
    /// goes on again, and Spindle unmaps its copy when LOG_ALL goes off (libvhost-user keeps
    /// it), so reusing the old log is not something to test.
    @Test(arguments: BackendProcess.Kind.available)
    func logAllOffThenOnAgain(backend kind: BackendProcess.Kind) throws {
        let backend = try BackendProcess.start(kind)
        defer { backend.stop() }
        let frontend = try connect(backend, .onRequest)
        let first = try frontend.startDirtyLog()
        var queue = frontend.queues[0]
        let pages = QueuePages(queue, frontend.memory)
        let read = { (slot: Int) -> Set<UInt64> in pages.data(slot).union(pages.written) }
        _ = first.harvestPages()
        #expect(try completeRequest(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)
        #expect(harvest(first, until: read(0)) == read(0))

        // LOG_ALL off alone (acked), the rings keep VHOST_VRING_F_LOG: no data or status page.
        // The used ring may still be marked (the kernel's vhost logs it on the ring flag alone).
        try frontend.setLogAll(false)
        #expect(try completeRequest(&queue, slot: 1, type: .read, sector: 8, bytes: 4096) == BlkStatus.ok)
        #expect(Set(first.harvestPages()).isSubset(of: pages.used), "data or status marked with LOG_ALL off")
        // On again: a new log, then LOG_ALL; the first log is left alone.
        _ = try frontend.replaceDirtyLog()
        let second = try #require(frontend.dirtyLog)
        _ = first.harvestPages()
        try frontend.setLogAll(true)
        #expect(try completeRequest(&queue, slot: 2, type: .read, sector: 16, bytes: 4096) == BlkStatus.ok)
        #expect(harvest(second, until: read(2)) == read(2), "LOG_ALL on again: marking resumes in the new log")
        #expect(first.dirtyPages().isEmpty, "the first log was marked after a new one was shared")

        // A cancelled migration and a second one: everything off without waiting, then a
        // fresh start (new log, LOG_ALL, the rings' flag).
        try frontend.stopDirtyLog()
        try frontend.synchronize()
        _ = second.harvestPages()
        #expect(try completeRequest(&queue, slot: 3, type: .read, sector: 24, bytes: 4096) == BlkStatus.ok)
        let third = try frontend.startDirtyLog()
        #expect(try completeRequest(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)
        #expect(harvest(third, until: read(0)) == read(0), "the second start marks in its own log")
        #expect(second.dirtyPages().isEmpty, "pages marked in a log after logging stopped")
        try frontend.stopDirtyLog()
        try frontend.shutdown(finalQueues: [queue])
    }

    @Test(arguments: BackendProcess.Kind.available)
    func logReplacedWhileIORuns(backend kind: BackendProcess.Kind) throws {
        let backend = try BackendProcess.start(kind)
        defer { backend.stop() }
        let frontend = try connect(backend, .onRequest)
        let first = try frontend.startDirtyLog()
        let pages = QueuePages(frontend.queues[0], frontend.memory)
        let reads = ReadLoop(queue: frontend.queues[0], slots: [0, 1])
        reads.start()
        #expect(reads.waitForCompletions(20), "reads before the new log: \(reads.failures)")

        let old = try frontend.replaceDirtyLog()
        #expect(old === first)
        let second = try #require(frontend.dirtyLog)
        // Requests submitted from now on come after the backend's reply: the new log's.
        let switched = reads.use(slots: [2, 3])
        #expect(reads.waitForCompletions(switched + 20), "reads after the new log: \(reads.failures)")
        var queue = reads.stop()
        #expect(reads.failures.isEmpty)

        let oldPages = harvest(old, until: pages.data(0).union(pages.written))
        #expect(oldPages.isSuperset(of: pages.data(0).union(pages.written)), "reads before the switch were not marked in the first log")
        #expect(oldPages.isDisjoint(with: pages.data(2).union(pages.data(3))), "reads made after SET_LOG_BASE was answered were marked in the old log")
        let afterSwitch = pages.data(2).union(pages.data(3)).union(pages.written)
        #expect(harvest(second, until: afterSwitch).isSuperset(of: afterSwitch))

        #expect(try completeRequest(&queue, slot: 3, type: .read, sector: 24, bytes: 4096) == BlkStatus.ok)
        #expect(harvest(second, until: pages.data(3).union(pages.written)) == pages.data(3).union(pages.written))
        #expect(old.dirtyPages().isEmpty, "the old log is still being marked")
        try frontend.stopDirtyLog()
        try frontend.shutdown(finalQueues: [queue])
    }

    /// Spindle's test hook `x-dirty-log=unmarked` offers logging and marks nothing: the
    /// checks above see that (so they can fail), while the messages all succeed.
    @Test(.enabled(if: BackendProcess.Kind.spindle.executable != nil, "spindle is not built"))
    func unmarkedHookIsSeen() throws {
        let backend = try BackendProcess.start(.spindle) { socket in
            ["--blockdev", "driver=null-co,node-name=n0,size=67108864,read-zeroes=on", "--export",
             "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=\(socket),writable=on,num-queues=1,x-dirty-log=unmarked"]
        }
        defer { backend.stop() }
        let frontend = try connect(backend, .onRequest)
        let log = try frontend.startDirtyLog()
        var queue = frontend.queues[0]
        #expect(try completeRequest(&queue, slot: 0, type: .read, sector: 0, bytes: 4096) == BlkStatus.ok)
        _ = try frontend.replaceDirtyLog()
        let second = try #require(frontend.dirtyLog)
        #expect(try completeRequest(&queue, slot: 1, type: .read, sector: 8, bytes: 4096) == BlkStatus.ok)
        try frontend.stopDirtyLog()
        try frontend.synchronize()
        #expect(log.dirtyPages().isEmpty && second.dirtyPages().isEmpty, "pages marked with x-dirty-log=unmarked")
        try frontend.shutdown(finalQueues: [queue])
    }

    /// Harvests `log` until the pages harvested hold `expected` (2 s at most) and returns them
    /// all: a backend may mark the used ring just after publishing used.idx (as Spindle and
    /// libvhost-user do), so a completion can be seen a moment before its used-ring mark.
    func harvest(_ log: FrontendDirtyLog, until expected: Set<UInt64>) -> Set<UInt64> {
        var pages = Set(log.harvestPages())
        let deadline = Date().addingTimeInterval(2)
        while !pages.isSuperset(of: expected), Date() < deadline {
            usleep(1_000)
            pages.formUnion(log.harvestPages())
        }
        return pages
    }

    /// A frontend with dirty logging negotiated (`mode`); the test case is cancelled if the
    /// backend does not offer it.
    func connect(_ backend: BackendProcess, _ mode: DirtyLogging) throws -> VhostUserBlkFrontend {
        var options = FrontendOptions(queueCount: 1, slotsPerQueue: Self.slots, maxRequestBytes: 4096)
        options.dirtyLogging = mode
        let result = Result { () throws(FrontendError) in
            try VhostUserBlkFrontend(socketPath: backend.socketPath, options: options)
        }
        if case .failure(let error) = result, error.description.hasPrefix("dirty logging wanted") {
            try Test.cancel("\(backend.kind) does not offer dirty logging: \(error)")
        }
        return try result.get()
    }
}

/// The log pages the device may write for one queue: each slot's data buffer, the status
/// bytes (all slots share a page) and the used ring (one page for a 64-entry ring).
struct QueuePages {
    let used: Set<UInt64>
    let status: Set<UInt64>
    private let dataPages: [Set<UInt64>]

    init(_ queue: BlkQueue, _ memory: SharedMemoryRegion) {
        func pages(_ pointer: UnsafeRawPointer, _ length: Int) -> Set<UInt64> {
            FrontendDirtyLog.pages(of: memory.guestPhysicalAddress(of: pointer), length: length).map { Set($0) } ?? []
        }
        used = pages(queue.ring.used, VirtqueueLayout.usedRingBytes(size: Int(queue.ring.size)))
        status = (0..<queue.slotCount).reduce(into: []) { $0.formUnion(pages(queue.statusPointer(of: $1), 1)) }
        dataPages = (0..<queue.slotCount).map { pages(queue.data(of: $0), queue.maxRequestBytes) }
    }

    func data(_ slot: Int) -> Set<UInt64> { dataPages[slot] }
    /// What every request makes the device write: status byte and used ring.
    var written: Set<UInt64> { status.union(used) }
}

/// Reads 4 KiB into the current slots, one request at a time, on a thread of its own until
/// stopped; the slots can be changed while it runs.
final class ReadLoop: @unchecked Sendable {
    private let lock = NSLock()
    private var queue: BlkQueue
    private var slots: [Int]
    private var completed = 0
    private var problems: [String] = []
    private var stopRequested = false
    private var finished = false

    init(queue: BlkQueue, slots: [Int]) {
        self.queue = queue
        self.slots = slots
    }

    var failures: [String] { lock.withLock { problems } }

    func start() {
        Thread.detachNewThread { self.run() }
    }

    /// Requests from now on use `slots`; returns the completions so far.
    func use(slots: [Int]) -> Int {
        lock.withLock {
            self.slots = slots
            return completed
        }
    }

    /// Waits (30 s at most) for `count` completions in total.
    func waitForCompletions(_ count: Int) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if lock.withLock({ completed >= count || finished }) { return lock.withLock { completed >= count } }
            usleep(1_000)
        }
        return false
    }

    /// Stops the loop and hands the queue back.
    func stop() -> BlkQueue {
        lock.withLock { stopRequested = true }
        while !lock.withLock({ finished }) { usleep(1_000) }
        return queue
    }

    private func run() {
        defer { lock.withLock { finished = true } }
        var round = 0
        while true {
            let slot: Int? = lock.withLock { stopRequested ? nil : slots[round % slots.count] }
            guard let slot else { return }
            round += 1
            do {
                let status = try completeRequest(&queue, slot: slot, type: .read, sector: UInt64(slot) * 8, bytes: 4096)
                guard status == BlkStatus.ok else { throw FrontendError("read into slot \(slot): status \(status)") }
                lock.withLock { completed += 1 }
            } catch {
                lock.withLock { problems.append("\(error)") }
                return
            }
        }
    }
}
