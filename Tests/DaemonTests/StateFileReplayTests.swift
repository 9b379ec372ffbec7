import BlockCommon
import ControlThread
import Glibc
import Monitor
import SpindleOptions
import SpindleTestSupport
import Testing
@testable import SpindleDaemon

/// A QMP command as a client's goes: run, then recorded before the reply.
@ControlActor
private func qmp(_ daemon: Daemon, _ command: String, _ arguments: JSONObject) async throws {
    let result = try await replayQMPCommand(command, arguments: arguments, on: daemon)
    try daemon.recordSucceeded(command: command, arguments: arguments, result: result)
}

@ControlActor
private func started(_ configuration: DaemonConfiguration) async throws -> Daemon {
    let daemon = Daemon(requestQuit: {})
    do {
        try await daemon.start(configuration)
    } catch {
        await daemon.shutdown()  // what spindle's main does when the start fails
        throw error
    }
    return daemon
}

/// `--state-file`: what a restarted daemon rebuilds, and the starts it refuses.
@Suite(.serialized) struct StateFileReplayTests {
    @Test @ControlActor func aRestartedDaemonServesWhatWasHotPluggedAndForgetsWhatWasDeleted() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = DaemonConfiguration()
        configuration.stateFile = directory.file("state.json")
        configuration.blockdevs = [nullNode("n0")]
        configuration.exports = [exportOptions("e0", node: "n0", in: directory)]

        let first = try await started(configuration)
        try await qmp(first, "object-add", JSONObject(["qom-type": .string("iothread"), "id": .string("io1"), "poll-max-ns": .number("0")]))
        try await qmp(first, "blockdev-add", JSONObject(["driver": .string("null-co"), "node-name": .string("n1")]))
        let socket1 = directory.file("e1.sock")
        try await qmp(first, "block-export-add", JSONObject([
            "type": .string("vhost-user-blk"), "id": .string("e1"), "node-name": .string("n1"), "iothread": .string("io1"),
            "addr": .object(["type": .string("unix"), "path": .string(socket1)])]))
        try await qmp(first, "blockdev-add", JSONObject(["driver": .string("null-co"), "node-name": .string("gone")]))
        try await qmp(first, "blockdev-del", JSONObject(["node-name": .string("gone")]))
        try await qmp(first, "block-export-del", JSONObject(["id": .string("e0")]))
        #expect(directory.exists("state.json.bak"))
        await first.shutdown()

        let second = try await started(configuration)
        #expect(second.queryBlockExports().map(\.id) == ["e1"])
        #expect(second.queryNamedBlockNodes().map(\.nodeName) == ["n0", "n1"])
        #expect(second.queryIOThreads().map(\.id) == ["io1"])
        #expect(directory.exists("e1.sock") && !directory.exists("e0.sock"))
        await second.shutdown()
    }

    @Test @ControlActor func aFailedWriteSaysTheCommandTookEffectAndKeepsTheGoodFile() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("state.json")
        var configuration = DaemonConfiguration()
        configuration.stateFile = path
        let daemon = try await started(configuration)
        try await qmp(daemon, "blockdev-add", JSONObject(["driver": .string("null-co"), "node-name": .string("n1")]))
        let good = try StateFileStore(path: path).read()
        #expect(mkdir(path + ".tmp", 0o700) == 0)  // the next write cannot create its temporary file
        defer { rmdir(path + ".tmp") }
        let error = await qmpError { try await qmp(daemon, "blockdev-add", JSONObject(["driver": .string("null-co"), "node-name": .string("n2")])) }
        #expect(error?.desc == "'blockdev-add' took effect, but the state file could not be written: cannot create '\(path).tmp': Is a directory; fix the cause, or the change is lost when spindle restarts")
        #expect(daemon.queryNamedBlockNodes().map(\.nodeName) == ["n1", "n2"])
        #expect(try StateFileStore(path: path).read() == good)
        rmdir(path + ".tmp")
        try await qmp(daemon, "blockdev-del", JSONObject(["node-name": .string("n1")]))  // the next write has both changes
        #expect(try StateFileFormat.parse(#require(try StateFileStore(path: path).read())).entries.map { $0.arguments["node-name"] } == [.string("n2")])
        await daemon.shutdown()
    }

    @Test @ControlActor func twoDaemonsCannotShareOneStateFile() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = DaemonConfiguration()
        configuration.stateFile = directory.file("state.json")
        let first = try await started(configuration)
        await #expect { _ = try await started(configuration) } throws: { error in
            "\(error)" == "state file '\(directory.file("state.json"))': another spindle uses this state file (it holds '\(directory.file("state.json.lock"))')"
        }
        await first.shutdown()
        let again = try await started(configuration)  // the lock went with the first daemon
        await again.shutdown()
    }

    @Test @ControlActor func aDamagedFileStopsTheStartAndIsLeftAsItWas() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("state.json")
        var configuration = DaemonConfiguration()
        configuration.stateFile = path
        let first = try await started(configuration)
        try await qmp(first, "blockdev-add", JSONObject(["driver": .string("null-co"), "node-name": .string("n1")]))
        await first.shutdown()

        let good = try #require(try StateFileStore(path: path).read())
        try StateFileStore(path: path).write(Array(good.prefix(good.count - 5)))
        let damaged = try #require(try StateFileStore(path: path).read())
        await #expect { _ = try await started(configuration) } throws: { error in
            "\(error)".hasPrefix("state file '\(path)': it is truncated") && "\(error)".contains("\(path).bak")
        }
        #expect(try StateFileStore(path: path).read() == damaged)
        #expect(try StateFileStore(path: path + ".bak").read() == good)  // the previous generation
    }

    @Test @ControlActor func anEntryThatFailsNamesItselfAndNothingStaysApplied() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("state.json")
        let socket = directory.file("e1.sock")
        let entries = [
            StateEntry(command: "blockdev-add", arguments: JSONObject(["driver": .string("null-co"), "node-name": .string("n1")])),
            StateEntry(command: "block-export-add", arguments: JSONObject([
                "type": .string("vhost-user-blk"), "id": .string("e1"), "node-name": .string("n1"),
                "addr": .object(["type": .string("unix"), "path": .string(socket)])])),
            StateEntry(command: "blockdev-add", arguments: JSONObject(["driver": .string("file"), "node-name": .string("n2"),
                                                                       "filename": .string(directory.file("missing.img"))])),
        ]
        try StateFileStore(path: path).write(StateFileFormat.serialize(entries, generation: 3))
        var configuration = DaemonConfiguration()
        configuration.stateFile = path
        await #expect { _ = try await started(configuration) } throws: { error in
            "\(error)".hasPrefix("state file '\(path)' entry 2 (blockdev-add node 'n2'): ")
        }
        #expect(!directory.exists("e1.sock"))  // the export entry 1 made is gone again
    }

    @Test @ControlActor func anEntryTheCommandLineDuplicatesIsSkippedIfEqualAndRefusedIfNot() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("state.json")
        let entry = StateEntry(command: "blockdev-add", arguments: JSONObject(["driver": .string("null-co"), "node-name": .string("n0"),
                                                                               "size": .number("\(64 << 20)")]))
        try StateFileStore(path: path).write(StateFileFormat.serialize([entry], generation: 1))
        var configuration = DaemonConfiguration()
        configuration.stateFile = path
        configuration.blockdevs = [nullNode("n0")]
        let daemon = try await started(configuration)
        #expect(daemon.queryNamedBlockNodes().map(\.nodeName) == ["n0"])
        await daemon.shutdown()

        configuration.blockdevs = [nullNode("n0", size: 1 << 20)]
        await #expect { _ = try await started(configuration) } throws: { error in
            "\(error)".contains("entry 0 (blockdev-add node 'n0'): the command line also defines node 'n0', with other options")
        }
    }
}
