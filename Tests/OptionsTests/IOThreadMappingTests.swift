import BlockCommon
import Testing
@testable import SpindleOptions

@Suite struct IOThreadMappingTests {
    private func export(_ args: [String]) throws -> VhostUserBlkExportOptions {
        guard case .run(let config) = try parseCommandLine(
            ["--object", "iothread,id=a", "--object", "iothread,id=b", "--blockdev", "driver=null-co,node-name=n"] + args) else {
            Issue.record("not a run")
            return VhostUserBlkExportOptions(id: "x", nodeName: NodeName("n"), socketPath: "/x")
        }
        return try #require(config.exports.first)
    }

    private let base = "type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=/tmp/e.sock,num-queues=4"

    @Test func keyvalListGoesRoundRobin() throws {
        let e = try export(["--export", base + ",iothread.0=a,iothread.1=b"])
        #expect(e.iothreadMapping == [IOThreadVQMapping(iothread: "a"), IOThreadVQMapping(iothread: "b")])
        #expect((0..<4).map { e.mappedIOThread(forQueue: $0) } == ["a", "b", "a", "b"])
    }

    @Test func jsonListAndVQMapping() throws {
        let list = try export(["--export", #"{"type":"vhost-user-blk","id":"e","node-name":"n","addr":{"type":"unix","path":"/tmp/e.sock"},"num-queues":2,"iothread":["b","a"]}"#])
        #expect(list.mappedIOThread(forQueue: 0) == "b")
        let mapped = try export(["--export", #"{"type":"vhost-user-blk","id":"e","node-name":"n","addr":{"type":"unix","path":"/tmp/e.sock"},"num-queues":3,"iothread-vq-mapping":[{"iothread":"a","vqs":[0,2]},{"iothread":"b","vqs":[1]}]}"#])
        #expect((0..<3).map { mapped.mappedIOThread(forQueue: $0) } == ["a", "b", "a"])
    }

    @Test func singleIOThreadStillWorks() throws {
        let e = try export(["--export", base + ",iothread=b"])
        #expect(e.iothread == "b" && e.iothreadMapping.isEmpty && e.mappedIOThread(forQueue: 3) == "b")
        #expect(try export(["--export", base]).mappedIOThread(forQueue: 0) == nil)
    }

    @Test(arguments: [
        (#"[{"iothread":"a","vqs":[0,1]},{"iothread":"b"}]"#, "every entry or in none"),
        (#"[{"iothread":"a","vqs":[0,1,1]},{"iothread":"b","vqs":[2]}]"#, "mapped twice"),
        (#"[{"iothread":"a","vqs":[0]},{"iothread":"b","vqs":[1]}]"#, "not mapped"),
        (#"[{"iothread":"a","vqs":[0,1,7]}]"#, "does not exist"),
        (#"[{"iothread":"zz"}]"#, "zz"),
        (#"[{"thread":"a"}]"#, "iothread-vq-mapping.0"),
    ])
    func badMappingsAreRefused(mapping: String, words: String) {
        let json = #"{"type":"vhost-user-blk","id":"e","node-name":"n","addr":{"type":"unix","path":"/tmp/e.sock"},"num-queues":3,"iothread-vq-mapping":"# + mapping + "}"
        #expect {
            _ = try export(["--export", json])
        } throws: { error in
            "\(error)".contains(words)
        }
    }
}
