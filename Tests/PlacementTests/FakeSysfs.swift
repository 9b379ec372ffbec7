import Glibc
import Testing

/// A sysfs-shaped folder under /tmp, removed when the value goes away.
final class FakeSysfs {
    let root: String

    init() {
        var template = Array("/tmp/spindle-sysfs-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed: errno \(errno)")
        root = String(cString: made!)
    }

    deinit { removeTree(root) }

    /// Writes `contents` to `relative` under the root, creating folders on the way.
    func write(_ relative: String, _ contents: String) {
        let path = root + "/" + relative
        var folder = ""
        for component in path.split(separator: "/").dropLast() {
            folder += "/" + component
            mkdir(folder, 0o755)
        }
        let file = fopen(path, "w")
        precondition(file != nil, "cannot create \(path)")
        fputs(contents, file)
        fclose(file)
    }

    func remove(_ relative: String) {
        removeTree(root + "/" + relative)
    }

    /// A NUMA machine: `nodes` are (id, cpulist, distance row) as the kernel prints them.
    static func numa(cpuOnline: String, nodes: [(id: Int, cpus: String, distance: String)], hasMemory: String? = nil) -> FakeSysfs {
        let sysfs = FakeSysfs()
        sysfs.write("devices/system/cpu/online", cpuOnline + "\n")
        sysfs.write("devices/system/node/online", nodes.map { "\($0.id)" }.joined(separator: ",") + "\n")
        if let hasMemory { sysfs.write("devices/system/node/has_memory", hasMemory + "\n") }
        for node in nodes {
            sysfs.write("devices/system/node/node\(node.id)/cpulist", node.cpus + "\n")
            sysfs.write("devices/system/node/node\(node.id)/distance", node.distance + "\n")
        }
        return sysfs
    }

    /// This machine's shape: one node, CPUs 0-1.
    static func oneNodeTwoCPUs() -> FakeSysfs {
        numa(cpuOnline: "0-1", nodes: [(0, "0-1", "10")], hasMemory: "0")
    }

    /// Two nodes of four CPUs each.
    static func twoNodes() -> FakeSysfs {
        numa(cpuOnline: "0-7", nodes: [(0, "0-3", "10 21"), (1, "4-7", "21 10")], hasMemory: "0-1")
    }

    /// Four nodes: node 2 is memory-only, node 3 has CPUs but no memory, and the table is
    /// asymmetric. Reaching node 2's memory costs 30 from node 0, 25 from node 1 and 15 from
    /// node 3, while node 2's own row says node 1 is at 12: a placer reading the wrong
    /// direction would pick node 1 instead of node 3.
    static func fourNodes() -> FakeSysfs {
        numa(
            cpuOnline: "0-5",
            nodes: [
                (0, "0-1", "10 20 30 40"),
                (1, "2-3", "20 10 25 30"),
                (2, "", "30 12 10 20"),
                (3, "4-5", "40 30 15 10"),
            ],
            hasMemory: "0-2")
    }
}

private func removeTree(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if (info.st_mode & S_IFMT) == S_IFDIR, let dir = opendir(path) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { removeTree(path + "/" + name) }
        }
        closedir(dir)
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// The error `body` throws, recorded as a failure if it throws none or one of another type.
func thrownError<E: Error>(_ type: E.Type, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> E? {
    do {
        try body()
        Issue.record("expected an error", sourceLocation: sourceLocation)
        return nil
    } catch let error as E {
        return error
    } catch {
        Issue.record("expected a \(E.self), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
