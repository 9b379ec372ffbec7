import BlockCommon
import ControlThread
import CSpindle
import Glibc
import Monitor
import SpindleTestSupport
import Testing
import VhostUserFrontend
@testable import SpindleDaemon

/// Exports on inactive nodes (QEMU 10's allow-inactive, and Spindle's waiting requests):
/// the daemon's monitor target called directly, a frontend in this process, and another
/// "process" holding the image's QEMU locks through an open file description of its own.
@Suite(.serialized) struct InactiveExportTests {
    /// What a writing QEMU or spindle holds on an image: consistent read and write, write
    /// not shared (QEMU's lock bytes 100, 101 and 201).
    /// A child another test forks shares this process's open file descriptions, and with
    /// them their OFD locks, until it execs (O_CLOEXEC closes only at exec): a lock just let
    /// go may stay held for that moment. So taking one, or activating after one was let go,
    /// is retried for up to 10 s; it must still succeed.
    static let lockPatienceAttempts = 1000

    final class OtherOwner {
        let fd: Int32
        init(_ path: String) {
            fd = open(path, O_RDWR | O_CLOEXEC)
            for byte: Int64 in [100, 101, 201] {
                var attempts = 0
                while spindle_ofd_setlk(fd, byte, F_RDLCK) != 0 {
                    attempts += 1
                    precondition(attempts < InactiveExportTests.lockPatienceAttempts, "lock byte \(byte) of \(path) is still held by someone else")
                    usleep(10_000)
                }
            }
        }
        func letGo() { close(fd) }
    }

    static func image(_ directory: TemporaryDirectory, size: Int = 1 << 20) -> String {
        let path = directory.file("disk.img")
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        ftruncate(fd, off_t(size))
        close(fd)
        return path
    }

    static func fileNode(_ name: String, _ path: String, active: Bool) -> BlockdevOptions {
        var options = BlockdevOptions(nodeName: NodeName(name), driver: .file(FileOptions(filename: path)))
        options.active = active
        return options
    }

    @ControlActor
    static func nodeIsActive(_ daemon: Daemon, _ name: String) -> Bool? {
        daemon.queryNamedBlockNodes().first { $0.nodeName == name }?.active
    }

    @Test @ControlActor func requestsWaitWhileTheNodeIsInactiveAndGoOnActivation() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = Self.image(directory)
        let owner = OtherOwner(path)
        let daemon = try await startedDaemon()
        try daemon.blockdevAdd(Self.fileNode("d0", path, active: false))
        #expect(Self.nodeIsActive(daemon, "d0") == false)
        var options = exportOptions("e0", node: "d0", in: directory)
        options.allowInactive = true
        try await daemon.blockExportAdd(options)
        #expect(Self.nodeIsActive(daemon, "d0") == false, "allow-inactive leaves the node inactive")
        // A frontend connects and reads the config space as QEMU does at realize.
        let frontend = try await InProcessFrontend.connect(to: directory.file("e0.sock"), queues: 1)
        #expect(frontend.frontend.config?.capacityBytes == 1 << 20)
        // A write while inactive: it waits.
        var queue = frontend.frontend.queues[0]
        queue.prepare(slot: 0, type: .write, sector: 8, byteCount: 4096)
        memset(queue.data(of: 0), 0x5A, 4096)
        queue.submit(slot: 0)
        _ = queue.ring.publishAvailable()
        queue.kick()
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(queue.ring.pendingUsedCount() == 0, "a request completed while the node was inactive")
        // The other owner still holds the image: activation fails, the node stays inactive.
        let refused = await qmpError { try await daemon.blockdevSetActive(nodeName: "d0", active: true) }
        #expect(refused?.desc.hasPrefix("Failed to activate node 'd0': image '\(path)' is locked by another process") == true, "\(refused?.desc ?? "")")
        #expect(Self.nodeIsActive(daemon, "d0") == false)
        #expect(queue.ring.pendingUsedCount() == 0)
        // It lets go; activation (of all nodes) lets the write through.
        owner.letGo()
        var activation = await qmpError { try await daemon.blockdevSetActive(nodeName: nil, active: true) }
        for _ in 1..<Self.lockPatienceAttempts where activation?.desc.contains("locked by another process") == true {
            try await Task.sleep(nanoseconds: 10_000_000)  // a forked child of another test (see lockPatienceAttempts)
            activation = await qmpError { try await daemon.blockdevSetActive(nodeName: nil, active: true) }
        }
        #expect(activation == nil, "\(activation?.desc ?? "")")
        #expect(Self.nodeIsActive(daemon, "d0") == true)
        for _ in 0..<500 where queue.ring.pendingUsedCount() == 0 { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(queue.ring.pendingUsedCount() == 1)
        #expect(queue.status(of: 0) == BlkStatus.ok)
        var written = [UInt8](repeating: 0, count: 4096)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        #expect(pread(fd, &written, 4096, 4096) == 4096)
        close(fd)
        #expect(written.allSatisfy { $0 == 0x5A })
        // Inactive again: the export allows it, and the image is free for the other side.
        try await daemon.blockdevSetActive(nodeName: "d0", active: false)
        let next = OtherOwner(path)  // would trap if Spindle still held a conflicting lock
        next.letGo()
        try await daemon.blockExportDel(id: "e0", mode: .hard)
        await daemon.shutdown()
        _ = frontend
    }

    @Test @ControlActor func exportsWithoutAllowInactiveActivateTheirNodeAndPinIt() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = Self.image(directory)
        let daemon = try await startedDaemon()
        // Adding the export activates the node (as QEMU)...
        try daemon.blockdevAdd(Self.fileNode("d0", path, active: false))
        try await daemon.blockExportAdd(exportOptions("e0", node: "d0", in: directory))
        #expect(Self.nodeIsActive(daemon, "d0") == true)
        // ...and the node cannot be inactivated while the export exists.
        let refused = await qmpError { try await daemon.blockdevSetActive(nodeName: "d0", active: false) }
        #expect(refused == QMPError(.genericError,
            "Failed to inactivate node: Operation not permitted (export 'e0' uses node 'd0' and was added without allow-inactive; delete it, or add it with allow-inactive true)"))
        #expect(Self.nodeIsActive(daemon, "d0") == true)
        try await daemon.blockExportDel(id: "e0", mode: .safe)
        try await daemon.blockdevSetActive(nodeName: "d0", active: false)
        // While someone else holds the image, such an export cannot be added at all.
        let owner = OtherOwner(path)
        let failed = await qmpError { try await daemon.blockExportAdd(exportOptions("e1", node: "d0", in: directory)) }
        #expect(failed?.desc.hasPrefix("--export id=e1: image '\(path)' is locked by another process (write lock)") == true, "\(failed?.desc ?? "")")
        #expect(daemon.queryBlockExports().isEmpty)
        // As in QEMU, the node itself was activated (with no users it needs no lock); the
        // export's write permission is what conflicts.
        #expect(Self.nodeIsActive(daemon, "d0") == true)
        owner.letGo()
        await daemon.shutdown()
    }

    @Test @ControlActor func noMirrorFromOrToAnInactiveNode() async throws {
        let daemon = try await startedDaemon()
        try daemon.blockdevAdd(nullNode("src"))
        var target = nullNode("tgt")
        target.active = false
        try daemon.blockdevAdd(target)
        let request = MirrorRequest(jobID: "m0", device: "src", target: "tgt")
        #expect(await qmpError { try await daemon.blockdevMirror(request) }
            == QMPError(.genericError, "Inactive node 'tgt' cannot be a mirror target; activate it first (blockdev-set-active)"))
        try await daemon.blockdevSetActive(nodeName: "src", active: false)
        #expect(await qmpError { try await daemon.blockdevMirror(request) }
            == QMPError(.genericError, "Inactive node 'src' cannot be a mirror source; activate it first (blockdev-set-active)"))
        #expect(daemon.queryJobs().isEmpty)
        await daemon.shutdown()
    }
}
