import ControlThread
import Glibc
import IOThreads
import Synchronization
import VhostUser

/// What a fake queue saw, in order.
enum QueueEvent: Equatable, Sendable {
    /// `start(on:)` ran; `onThatThread`: on the IOThread it was given.
    case started(iothread: String, onThatThread: Bool)
    case stopped(iothread: String)
    case callFDReplaced(Int32)
    case resumed
    /// The dirty log switched to on the IOThread.
    case dirtyLogReplaced(VirtqueueDirtyLog)
}

/// A queue that serves nothing: it records what the session asked of it.
final class FakeQueue: VhostUserDeviceQueue, @unchecked Sendable {
    let index: Int
    let kickFD: Int32
    let callFD: Int32
    /// The ring's base when the queue was made (split: its avail index).
    let ringBase: UInt32
    /// What `stop` reports as the ring's base.
    let stopBase: UInt32
    /// The ring is a packed one.
    let packed: Bool
    var onBroken: (@Sendable (_ queueIndex: Int, _ reason: String) -> Void)?
    private let recorded = Mutex<[QueueEvent]>([])

    init(index: Int, kickFD: Int32, callFD: Int32, ringBase: UInt32, stopBase: UInt32, packed: Bool = false) {
        self.packed = packed
        self.index = index
        self.kickFD = kickFD
        self.callFD = callFD
        self.ringBase = ringBase
        self.stopBase = stopBase
    }

    var events: [QueueEvent] { recorded.withLock { $0 } }
    private func record(_ event: QueueEvent) { recorded.withLock { $0.append(event) } }

    func start(on thread: IOThread) {
        record(.started(iothread: thread.id, onThatThread: thread.threadID == gettid()))
    }

    @ControlActor func stop(on thread: IOThread) async -> UInt32 {
        await withCheckedContinuation { continuation in
            thread.post { running in
                self.record(.stopped(iothread: running.id))
                continuation.resume(returning: self.stopBase)
            }
        }
    }

    @ControlActor func replaceCallFD(_ fd: Int32, on thread: IOThread) async {
        record(.callFDReplaced(fd))
    }

    func resumeAfterDrain() { record(.resumed) }

    /// Not an event: every queue gets one before it starts.
    private let initialDirtyLog = Mutex<VirtqueueDirtyLog?>(nil)
    func setInitialDirtyLog(_ log: VirtqueueDirtyLog) { initialDirtyLog.withLock { $0 = log } }

    @ControlActor func replaceDirtyLog(_ log: VirtqueueDirtyLog, on thread: IOThread) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            thread.post { _ in
                self.record(.dirtyLogReplaced(log))
                continuation.resume()
            }
        }
    }

    /// The last dirty log the queue was given.
    var dirtyLog: VirtqueueDirtyLog? {
        for event in events.reversed() { if case .dirtyLogReplaced(let log) = event { return log } }
        return initialDirtyLog.withLock { $0 }
    }
}

/// A device with a fixed config space that makes `FakeQueue`s.
@ControlActor
final class FakeDevice: VhostUserDevice {
    nonisolated static let version1: UInt64 = 1 << 32
    nonisolated static let flush: UInt64 = 1 << 9
    nonisolated static let eventIndex: UInt64 = 1 << 29
    nonisolated static let multiQueue: UInt64 = 1 << 12

    var deviceFeatures: UInt64 = FakeDevice.version1 | FakeDevice.flush | FakeDevice.eventIndex | FakeDevice.multiQueue
    var withheldProtocolFeatures: VhostUserProtocolFeatures = []
    var marksDirtyPages = true
    let queueCount: Int
    let typeName = "fake"
    /// 60 bytes, shaped like virtio-blk's (capacity first, num_queues at 34).
    var config: [UInt8]
    /// `stop` reports the ring's base plus this (as if the queue had taken requests).
    var requestsTakenBeforeStop: UInt16 = 0
    private(set) var queues: [FakeQueue] = []
    private(set) var configWrites: [(offset: Int, bytes: [UInt8], features: UInt64)] = []
    /// Device-specific requests it takes (the others end the session), and those it got.
    var ownRequests: Set<VhostUserRequestCode> = [.netSetMTU]
    private(set) var deviceRequests: [(code: VhostUserRequestCode, payload: [UInt8])] = []

    init(queueCount: Int = 1, capacitySectors: UInt64 = 2048) {
        self.queueCount = queueCount
        var bytes = [UInt8](repeating: 0, count: 60)
        withUnsafeBytes(of: capacitySectors.littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        withUnsafeBytes(of: UInt16(queueCount).littleEndian) { bytes.replaceSubrange(34..<36, with: $0) }
        config = bytes
    }

    func readConfig(offset: Int, size: Int) -> [UInt8]? {
        guard offset >= 0, size >= 0, offset + size <= config.count else { return nil }
        return Array(config[offset..<offset + size])
    }

    func writeConfig(offset: Int, bytes: [UInt8], negotiatedFeatures: UInt64) -> Bool {
        configWrites.append((offset, bytes, negotiatedFeatures))
        return true
    }

    func handleDeviceRequest(_ code: VhostUserRequestCode, payload: [UInt8]) async -> VhostUserRequestOutcome? {
        guard ownRequests.contains(code) else { return nil }
        deviceRequests.append((code, payload))
        return .done
    }

    func makeQueue(index: Int, ring queueRing: QueueRing, kickFD: Int32, callFD: Int32) -> any VhostUserDeviceQueue {
        let queue: FakeQueue
        switch queueRing {
        case .split(let ring, _):
            queue = FakeQueue(index: index, kickFD: kickFD, callFD: callFD, ringBase: ring.vringBase,
                              stopBase: UInt32(ring.lastAvailableIndex &+ requestsTakenBeforeStop))
        case .packed(let ring, _):
            // A packed ring's stop reports its base unchanged (the fake takes no requests).
            queue = FakeQueue(index: index, kickFD: kickFD, callFD: callFD, ringBase: ring.vringBase,
                              stopBase: ring.vringBase, packed: true)
        }
        queues.append(queue)
        return queue
    }
}

/// One IOThread for every queue; records placements and stops.
@ControlActor
final class FakeThreads: IOThreadProvider {
    let thread: IOThread
    private(set) var placed: [String] = []
    private(set) var stopped: [String] = []

    init() throws {
        thread = try IOThread(id: "session-test", cpu: nil)
        thread.start()
    }

    func ioThread(forExport exportID: String, queue: Int, ring: UnsafeRawPointer) -> IOThread? {
        placed.append("\(exportID)/\(queue)")
        return thread
    }

    func queueStopped(export exportID: String, queue: Int, thread: IOThread) {
        stopped.append("\(exportID)/\(queue)@\(thread.id)")
    }

    func shutDown() { thread.stop() }
}
