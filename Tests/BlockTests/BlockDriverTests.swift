import BlockCommon
@testable import BlockGraph
import BlockIO
import ControlThread
import Glibc
import Testing

/// The owned file descriptor: closed exactly once.
@Suite struct OwnedFileDescriptorTests {
    /// A descriptor at a number far above what anything else here opens, so that no other
    /// test can get the same number between two checks.
    static func highDescriptor(_ number: Int32) -> Int32 {
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        precondition(fd >= 0)
        defer { close(fd) }
        return dup2(fd, number)
    }

    static func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    @Test func explicitCloseClosesOnceAndTheDeinitDoesNotCloseAgain() {
        let number = Self.highDescriptor(901)
        #expect(number == 901)
        do {
            let owned = OwnedFileDescriptor(adopting: number)
            #expect(owned.rawValue == 901)
            #expect(owned.close() == 0)
            #expect(!Self.isOpen(901))
            // Someone else gets the number; the consumed owner must not touch it again.
            #expect(Self.highDescriptor(901) == 901)
        }
        #expect(Self.isOpen(901), "the number was closed a second time")
        close(901)
    }

    @Test func droppingTheOwnerClosesIt() {
        let number = Self.highDescriptor(902)
        do {
            let owned = OwnedFileDescriptor(adopting: number)
            #expect(Self.isOpen(owned.rawValue))
        }
        #expect(!Self.isOpen(902))
    }
}

/// Drivers through the GS-side protocol, and filters in the graph.
@Suite(.serialized) struct BlockDriverTests {
    static func inode(_ fd: Int32) -> ino_t? {
        var info = stat()
        return fstat(fd, &info) == 0 ? info.st_ino : nil
    }

    static func inode(_ path: String) -> ino_t {
        var info = stat()
        stat(path, &info)
        return info.st_ino
    }

    @Test @ControlActor func fileDriverOpensResizesAndClosesItsDescriptorOnce() throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let driver = try FileDriver.open(FileOptions(filename: path), node: NodeName("f"), nodes: [:])
        let file = try #require(driver.io as? FileIO)
        #expect(file.length == 1 << 20)
        #expect(Self.inode(file.fd) == Self.inode(path))
        try driver.resize(to: 2 << 20)
        #expect(file.length == 2 << 20)
        var info = stat()
        stat(path, &info)
        #expect(info.st_size == 2 << 20)
        #expect { try driver.resize(to: 1 << 20) } throws: { ($0 as? BlockError)?.errno == ENOTSUP }
        #expect(driver.display == { var d = BlockNodeDisplay(file: path); d.cacheDirect = false; return d }())
        driver.close()
        // Closed: the number is free (or, if something reused it, no longer our image).
        #expect(Self.inode(file.fd) != Self.inode(path))
        driver.close()  // a second close does nothing
        #expect { try driver.resize(to: 4 << 20) } throws: { ($0 as? BlockError)?.errno == EBADF }
    }

    @Test @ControlActor func nullDriverTakesAnySize() throws {
        var options = NullOptions()
        options.size = 4096
        let driver = try NullDriver.open(options, node: NodeName("n"), nodes: [:])
        #expect(driver.io.length == 4096)
        try driver.resize(to: 512)
        #expect(driver.io.length == 512)
        #expect(driver.display.file == "n")
        #expect(driver.children.isEmpty)
        driver.close()
    }

    @Test @ControlActor func aFilterKeepsItsChildInUseAndPassesItsUsersLocksDown() async throws {
        let path = temporaryImage(size: 1 << 20)
        defer { unlink(path) }
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("f"), driver: .file(FileOptions(filename: path))))
        try graph.openNode(BlockdevOptions(nodeName: NodeName("d"), driver: .delay(DelayFilterOptions(child: NodeName("f")))))
        let filter = try #require(graph.nodes[NodeName("d")])
        #expect(filter.driverName == "x-delay")
        #expect(filter.display.file == path)
        #expect(filter.length == 1 << 20)
        #expect(graph.nodes[NodeName("f")]?.parents == [NodeName("d")])
        // blockdev-del of the child is refused while the filter exists.
        #expect { try graph.closeNode(NodeName("f")) } throws: { ($0 as? BlockError)?.message.contains("filter node 'd'") == true }
        // A writer on the filter holds the child's write lock: a second node on the image cannot write.
        try graph.openNode(BlockdevOptions(nodeName: NodeName("g"), driver: .file(FileOptions(filename: path))))
        let writer = try graph.createBackend(name: "w", node: NodeName("d"), permissions: [.consistentRead, .write])
        #expect(throws: BlockError.self) {
            _ = try graph.createBackend(name: "w2", node: NodeName("g"), permissions: [.consistentRead, .write])
        }
        // Resizing goes through the filter to the child; the child alone is refused.
        await #expect(throws: BlockError.self) { _ = try await graph.resize(node: NodeName("f"), to: 2 << 20) }
        _ = try await graph.resize(node: NodeName("d"), to: 2 << 20)
        #expect(graph.nodes[NodeName("f")]?.length == 2 << 20)
        #expect(filter.length == 2 << 20)
        await graph.deleteBackend(writer)
        // The writer gone, its lock on the child is gone too.
        let second = try graph.createBackend(name: "w2", node: NodeName("g"), permissions: [.consistentRead, .write])
        await graph.deleteBackend(second)
        // A filter over a filter is refused.
        #expect(throws: BlockError.self) {
            try graph.openNode(BlockdevOptions(nodeName: NodeName("dd"), driver: .delay(DelayFilterOptions(child: NodeName("d")))))
        }
        graph.closeAllNodes()  // the filter first, then its child
        #expect(graph.nodes.isEmpty)
    }

    @Test @ControlActor func aFilterNeedsAnExistingChild() {
        let graph = BlockGraph()
        #expect { try graph.openNode(BlockdevOptions(nodeName: NodeName("d"), driver: .delay(DelayFilterOptions(child: NodeName("x"))))) }
            throws: { ($0 as? BlockError)?.errno == ENOENT }
    }
}
