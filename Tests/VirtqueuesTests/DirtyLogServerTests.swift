import ControlThread
import Glibc
import Testing
import VhostUser
@testable import Virtqueues

/// A zeroed log in test memory covering the rig's 1 MiB of guest memory (256 pages).
final class ServerTestLog: @unchecked Sendable {
    let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 4)
    init() { words.initialize(repeating: 0, count: 4) }
    deinit { words.deallocate() }
    var bitmap: DirtyLogBitmap { DirtyLogBitmap(words: words, wordCount: 4) }
    var markedPages: [UInt64] { (0..<UInt64(256)).filter { words[Int($0 >> 6)] & (1 << ($0 & 63)) != 0 } }
    func clear() { for i in 0..<4 { words[i] = 0 } }
}

/// The server marks what the device wrote, on a real IOThread with requests completed
/// through io_uring: a read-shaped request marks its data pages, its status page and the
/// used ring's page; a write-shaped one only its status and the used ring; a log replaced
/// while requests are in flight gets their marks and the old one none; logging switched off
/// marks nothing, and on again marks again; a stop marks the whole used ring.
@Suite(.serialized) struct DirtyLogServerTests {
    /// The rig's used ring is at guest-physical 0x3000 (page 3); logged there.
    static let usedRing: UInt64 = 0x3000

    /// Descriptors 0-2: header (readable), 0x2000 bytes of data at 0x40800 (writable:
    /// pages 0x40-0x42), status at 0x50000. Descriptors 4-6: header, 0x1000 bytes of data
    /// at 0x60000 (readable), status at 0x70000.
    private func layOutReadAndWrite(_ rig: ServerTestRig) {
        rig.guest.setChain([(0x20000, 16, false), (0x40800, 0x2000, true), (0x50000, 1, true)], first: 0)
        rig.guest.setChain([(0x20000, 16, false), (0x60000, 0x1000, false), (0x70000, 1, true)], first: 4)
    }

    private func install(_ log: ServerTestLog?, on rig: ServerTestRig) async {
        let value = log.map { VirtqueueDirtyLog(bitmap: $0.bitmap, usedRingGuestAddress: Self.usedRing) } ?? .off
        await rig.queue.replaceDirtyLog(value, on: rig.thread)
    }

    /// Offers `heads`, completes them and waits until the batch is published.
    private func serve(_ heads: [UInt16], on rig: ServerTestRig) async {
        let before = await rig.onThread { _ in rig.usedIndex }
        rig.guest.offer(heads)
        var one: UInt64 = 1
        _ = write(rig.kickFD, &one, 8)
        #expect(await rig.eventually { handler in heads.allSatisfy { handler.slot(ofHead: $0) != nil } })
        for head in heads { await rig.complete(head: head) }
        #expect(await rig.eventually { _ in rig.usedIndex == before &+ UInt16(heads.count) })
        _ = await rig.onThread { _ in true }  // the end of batch (publish, then its marks) is over
    }

    @Test @ControlActor func aReadMarksDataStatusAndUsedRingAWriteOnlyStatusAndUsedRing() async throws {
        let rig = try ServerTestRig()
        layOutReadAndWrite(rig)
        let log = ServerTestLog()
        await install(log, on: rig)
        await serve([0], on: rig)
        #expect(log.markedPages == [0x3, 0x40, 0x41, 0x42, 0x50])
        log.clear()
        await serve([4], on: rig)
        #expect(log.markedPages == [0x3, 0x70])
        await rig.tearDown()
    }

    @Test @ControlActor func aLogReplacedWhileRequestsAreInFlightGetsTheirMarks() async throws {
        let rig = try ServerTestRig()
        layOutReadAndWrite(rig)
        let old = ServerTestLog(), new = ServerTestLog()
        await install(old, on: rig)
        rig.offer(0, 4)
        #expect(await rig.eventually { $0.started.count == 2 })
        await install(new, on: rig)
        // From here on the queue must never touch the old log: anything set now is a bug.
        old.clear()
        await rig.complete(head: 0)
        await rig.complete(head: 4)
        #expect(await rig.eventually { _ in rig.usedIndex == 2 })
        _ = await rig.onThread { _ in true }
        #expect(new.markedPages == [0x3, 0x40, 0x41, 0x42, 0x50, 0x70])
        #expect(old.markedPages == [])
        await rig.tearDown()
    }

    @Test @ControlActor func loggingOffMarksNothingAndOnAgainMarksAgain() async throws {
        let rig = try ServerTestRig()
        layOutReadAndWrite(rig)
        let log = ServerTestLog()
        await install(log, on: rig)
        await install(nil, on: rig)
        await serve([0], on: rig)
        #expect(log.markedPages == [])
        await install(log, on: rig)
        await serve([4], on: rig)
        #expect(log.markedPages == [0x3, 0x70])
        await rig.tearDown()
    }

    @Test @ControlActor func aStopMarksTheWholeUsedRingBeforeReportingTheBase() async throws {
        let rig = try ServerTestRig()
        let log = ServerTestLog()
        await install(log, on: rig)
        _ = await rig.queue.stop(on: rig.thread)
        // 16 entries: flags, idx, elements and avail_event all on page 3.
        #expect(log.markedPages == [0x3])
        rig.thread.stop()
        close(rig.kickFD)
        close(rig.callFD)
    }
}
