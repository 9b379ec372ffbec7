import Foundation
@testable import VhostUserFrontend

/// A vhost-user-blk backend serving a 64 MiB null-co node that reads zeroes, on a socket
/// in a fresh directory: Debian's qemu-storage-daemon or the Spindle binary built next to
/// the tests. Killed by `stop()` (call it from a defer, so a failing test cleans up).
struct BackendProcess {
    enum Kind: String, CaseIterable, Sendable, CustomStringConvertible {
        case qsd, spindle

        /// The executable, or nil if it is not there (the tests are then skipped).
        var executable: String? {
            switch self {
            case .qsd:
                return ["/usr/bin/qemu-storage-daemon", "/usr/local/bin/qemu-storage-daemon"]
                    .first { FileManager.default.isExecutableFile(atPath: $0) }
            case .spindle:
                // The test bundle is built into the same directory as the products.
                let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
                let sibling = bundle.deletingLastPathComponent().appendingPathComponent("spindle").path
                return FileManager.default.isExecutableFile(atPath: sibling) ? sibling : nil
            }
        }

        static var available: [Kind] { allCases.filter { $0.executable != nil } }

        var description: String { rawValue }

        func arguments(socket: String) -> [String] {
            // One queue on both (qsd's default; Spindle's is 16), so queue-count checks agree.
            let export = "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=\(socket),writable=on,num-queues=1"
            return ["--blockdev", "driver=null-co,node-name=n0,size=67108864,read-zeroes=on", "--export", export]
        }
    }

    static let capacity: UInt64 = 64 << 20

    let kind: Kind
    let process: Process
    let directory: URL
    var socketPath: String { directory.appendingPathComponent("backend.sock").path }

    /// Starts `kind` serving the null node, or with `arguments(socket)` instead, and with
    /// `environment` added to this process's.
    static func start(_ kind: Kind, arguments: ((String) -> [String])? = nil,
                      environment: [String: String] = [:]) throws -> BackendProcess {
        guard let executable = kind.executable else { throw FrontendError("\(kind) is not installed") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("frontend-\(kind)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let socket = directory.appendingPathComponent("backend.sock").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments?(socket) ?? kind.arguments(socket: socket)
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let backend = BackendProcess(kind: kind, process: process, directory: directory)
        let deadline = Date().addingTimeInterval(10)
        // qsd's socket file appears at bind(), and a connect before its listen() is refused;
        // wait until the kernel no longer lists the path as bound but not listening (Spindle
        // binds under a temporary name and renames after listen(), so its path is never listed
        // that way). No probe connection: a backend would serve it as a frontend.
        while !FileManager.default.fileExists(atPath: socket) || Self.isBoundNotListening(socket) {
            guard process.isRunning, Date() < deadline else {
                backend.stop()
                throw FrontendError("\(kind) did not listen on its socket")
            }
            usleep(10_000)
        }
        return backend
    }

    /// Whether /proc/net/unix lists a socket bound to `path` without __SO_ACCEPTCON (listen).
    static func isBoundNotListening(_ path: String) -> Bool {
        guard let table = try? String(contentsOfFile: "/proc/net/unix", encoding: .utf8) else { return false }
        return table.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count >= 8 && fields[7] == path && fields[3] != "00010000"
        }
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}
