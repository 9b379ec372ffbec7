import BlockCommon
@testable import BlockGraph
import BlockIO
import ControlThread
import Foundation
import Glibc
import Testing

/// block-stream's copy into a qcow2 image (`Qcow2Allocator.fillUnallocated`) on real images
/// made by qemu-img: it fills only clusters still unallocated, so a cluster written first
/// (by the guest) keeps its data, and the result passes the real qemu-img's check.
@Suite struct Qcow2StreamCopyTests {
    static let cluster = 64 * 1024

    func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    @Test @ControlActor func fillsOnlyClustersStillUnallocatedAndTheImageStaysClean() throws {
        let folder = NSTemporaryDirectory() + "/spindle-stream-copy-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let base = folder + "/base.qcow2", top = folder + "/top.qcow2"
        for command in [["qemu-img", "create", "-q", "-f", "qcow2", base, "1M"],
                        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", base],
                        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top, "1M"],
                        // What the guest wrote first: cluster 1 data, cluster 3 a zero cluster.
                        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 64k 64k", "-c", "write -z 192k 64k", top]] {
            let result = try run(command)
            try #require(result.status == 0, "\(command): \(result.output)")
        }
        let graph = BlockGraph()
        let node = try graph.openNode(BlockdevOptions(nodeName: NodeName("top"), driver: .qcow2(Qcow2Options(file: .inline(FileOptions(filename: top))))))
        let io = try #require(node.io as? Qcow2IO)
        let allocator = try #require(io.allocator)
        #expect(io.isAllocatedHere(0, length: UInt64(Self.cluster)) == false)
        #expect(io.isAllocatedHere(UInt64(Self.cluster), length: UInt64(Self.cluster)) == true)
        #expect(io.isAllocatedHere(UInt64(3 * Self.cluster), length: UInt64(Self.cluster)) == true)  // the zero flag hides base
        let data = UnsafeMutableRawPointer.allocate(byteCount: 4 * Self.cluster, alignment: 4096)
        defer { data.deallocate() }
        memset(data, 0x33, 4 * Self.cluster)
        #expect(allocator.fillUnallocated(io, offset: 0, clusters: 4, data: data) == Int64(2 * Self.cluster))
        #expect(allocator.fillUnallocated(io, offset: 0, clusters: 4, data: data) == 0)  // nothing left to fill
        #expect(allocator.fillUnallocated(io, offset: 512, clusters: 1, data: data) == -Int64(EINVAL))  // not cluster aligned
        try graph.closeNode(NodeName("top"))
        let reads = try run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x33 0 64k", "-c", "read -P 0x22 64k 64k",
                             "-c", "read -P 0x33 128k 64k", "-c", "read -P 0 192k 64k", "-c", "read -P 0x11 256k 768k", top])
        #expect(reads.status == 0 && !reads.output.contains("Pattern verification failed"), "\(reads.output)")
        let check = try run(["qemu-img", "check", top])
        #expect(check.status == 0, "qemu-img check: \(check.output)")
    }
}
