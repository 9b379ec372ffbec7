import BlockCommon
import ControlThread
import SpindleOptions
@testable import Monitor

/// Records what the monitor asks of the daemon and answers with canned results.
@ControlActor
final class FakeCommandTarget: MonitorCommandTarget {
    var calls: [String] = []
    var addedBlockdevs: [BlockdevOptions] = []
    var addedExports: [VhostUserBlkExportOptions] = []
    var resizes: [(ResizeTarget, UInt64)] = []
    var quitCount = 0
    /// Thrown by every command that can fail, when set.
    var failure: QMPError? = nil
    /// When set, block-export-add waits until `releaseExportAdd()`.
    var holdExportAdd = false
    private var heldExportAdds: [CheckedContinuation<Void, Never>] = []

    var exports = [BlockExportInfo(id: "exp0", nodeName: "disk0")]
    var nodes = [BlockNodeInfo(nodeName: "disk0", driver: "file", file: "/images/disk0.img", readOnly: false,
                               virtualSize: 1 << 30, cacheDirect: true)]
    var iothreads = [IOThreadInfo(id: "io0", threadID: 4242, cpu: 3)]

    func blockdevAdd(_ options: BlockdevOptions) throws(QMPError) {
        calls.append("blockdevAdd \(options.nodeName)")
        if let failure { throw failure }
        addedBlockdevs.append(options)
    }

    var mirrors: [MirrorRequest] = []
    var jobCommands: [(JobCommand, String)] = []
    var jobs: [JobQueryInfo] = []

    func blockdevMirror(_ request: MirrorRequest) async throws(QMPError) {
        calls.append("blockdevMirror \(request.jobID)")
        if let failure { throw failure }
        mirrors.append(request)
    }

    func jobCommand(_ command: JobCommand, id: String) throws(QMPError) {
        calls.append("\(command.rawValue) \(id)")
        if let failure { throw failure }
        jobCommands.append((command, id))
    }

    func queryJobs() -> [JobQueryInfo] { jobs }

    func blockdevDel(nodeName: String) throws(QMPError) {
        calls.append("blockdevDel \(nodeName)")
        if let failure { throw failure }
    }

    func blockdevSetActive(nodeName: String?, active: Bool) async throws(QMPError) {
        calls.append("blockdevSetActive \(nodeName ?? "-") \(active)")
        if let failure { throw failure }
    }

    func blockExportAdd(_ options: VhostUserBlkExportOptions) async throws(QMPError) {
        calls.append("blockExportAdd \(options.id)")
        if holdExportAdd { await withCheckedContinuation { heldExportAdds.append($0) } }
        if let failure { throw failure }
        addedExports.append(options)
    }

    func releaseExportAdd() {
        let held = heldExportAdds
        heldExportAdds.removeAll()
        for continuation in held { continuation.resume() }
    }

    var heldExportAddCount: Int { heldExportAdds.count }

    func blockExportDel(id: String, mode: BlockExportDeleteMode) async throws(QMPError) {
        calls.append("blockExportDel \(id) \(mode.rawValue)")
        if let failure { throw failure }
    }

    func blockResize(_ target: ResizeTarget, size: UInt64) async throws(QMPError) -> ResizeOutcome {
        calls.append("blockResize")
        if let failure { throw failure }
        resizes.append((target, size))
        return ResizeOutcome(guestNotified: true)
    }

    func revokeExport(id: String) async throws(QMPError) {
        calls.append("revokeExport \(id)")
        if let failure { throw failure }
    }

    func objectAdd(_ options: IOThreadObjectOptions) throws(QMPError) {
        calls.append("objectAdd \(options.id) \(options.pollMaxNs.map(String.init) ?? "-")")
        if let failure { throw failure }
    }

    func objectDel(id: String) throws(QMPError) {
        calls.append("objectDel \(id)")
        if let failure { throw failure }
    }

    func moveQueue(exportID: String, queue: Int, iothread: String) async throws(QMPError) {
        calls.append("moveQueue \(exportID) \(queue) \(iothread)")
        if let failure { throw failure }
    }

    func queryBlockExports() -> [BlockExportInfo] { exports }
    func queryNamedBlockNodes() -> [BlockNodeInfo] { nodes }
    func queryIOThreads() -> [IOThreadInfo] { iothreads }

    func quit() {
        calls.append("quit")
        quitCount += 1
    }
}
