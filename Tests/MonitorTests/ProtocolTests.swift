import ControlThread
import Glibc
@testable import Monitor
import SpindleOptions
import SpindleTestSupport
import Testing

@Suite(.serialized) struct ProtocolTests {
    @Test func greetingAndNegotiation() async throws {
        let fixture = try await QMPFixture.make()
        defer { fixture.closeSoon() }
        let client = try QMPLineClient(path: fixture.path)
        #expect(try client.readLine() == #"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0}, "package": "spindle 0.1.0"}, "capabilities": []}}"#)
        #expect(try client.command(#"{"execute": "query-version", "id": 1}"#)
                == #"{"id": 1, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#)
        #expect(try client.command(#"{"execute": "nope"}"#)
                == #"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#)
        #expect(try client.command(#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#)
                == #"{"error": {"class": "GenericError", "desc": "Capability 'oob' not available"}}"#)
        #expect(try client.command(#"{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}}"#)
                == #"{"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'foo'"}}"#)
        #expect(try client.command(#"{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}"#)
                == #"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable', expected: array"}}"#)
        #expect(try client.command(#"{"execute": "qmp_capabilities", "arguments": {"enable": []}, "id": "x"}"#) == #"{"return": {}, "id": "x"}"#)
        #expect(try client.command(#"{"execute": "qmp_capabilities", "id": 5}"#)
                == #"{"id": 5, "error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}"#)
        #expect(try client.command(#"{"execute": "query-version", "id": {"a": [1, 2]}}"#)
                == #"{"return": {"qemu": {"micro": 0, "minor": 0, "major": 0}, "package": "spindle 0.1.0"}, "id": {"a": [1, 2]}}"#)
    }

    @Test func envelopeErrors() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        let cases: [(String, String)] = [
            (#"[1, 2]"#, #"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}"#),
            (#""str""#, #"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}"#),
            (#"{}"#, #"{"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}"#),
            (#"{"id": 1}"#, #"{"id": 1, "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}"#),
            (#"{"foo": 1}"#, #"{"error": {"class": "GenericError", "desc": "QMP input member 'foo' is unexpected"}}"#),
            (#"{"execute": 5, "id": 1}"#, #"{"id": 1, "error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}"#),
            (#"{"execute": "query-version", "arguments": 5}"#, #"{"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}"#),
            (#"{"execute": "query-version", "arguments": null}"#, #"{"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}"#),
            (#"{"exec-oob": "query-version", "id": 1}"#, #"{"id": 1, "error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}"#),
            (#"{"execute": "query-version", "arguments": {"x": 1}, "id": 3}"#, #"{"id": 3, "error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}}"#),
            (#"{"execute": "nope", "id": 1}"#, #"{"id": 1, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#),
            (#"{"execute": "nope", "id": null}"#, #"{"id": null, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#),
        ]
        for (request, reply) in cases {
            #expect(try client.command(request) == reply, "\(request)")
        }
        // The connection still works after every error.
        #expect(try client.command(#"{"execute": "query-block-exports"}"#).hasPrefix(#"{"return": ["#))
    }

    @Test func malformedJSONGetsAnErrorAndTheClientGoesOn() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        for bad in [#"{"exec"#, "}", "]", #"{"a" 1}"#, #"{"a": tru}"#, #"{"execute": "nope", "id": 1, "id": 2}"#, "\u{01}", "{\"a\": 01}"] {
            let reply = try client.command(bad)
            #expect(reply.hasPrefix(#"{"error": {"class": "GenericError", "desc": "JSON parse error, "#), "\(bad) -> \(reply)")
        }
        // Invalid UTF-8 inside a string is not a reason to crash.
        client.sendBytes([UInt8](#"{"execute": "nope", "id": ""#.utf8) + [0xFF, 0xC3] + [UInt8]("\"}\n".utf8))
        #expect(try client.readLine().contains("CommandNotFound"))
        #expect(try client.command(#"{"execute": "query-version", "id": 9}"#).hasSuffix(#""id": 9}"#))
    }

    @Test func messagesWithoutNewlinesAndAcrossWrites() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        client.send(#"{"execute": "query-block-exports", "id": 1}{"execute": "query-block-exports", "id": 2} {"execute":"#)
        #expect(try client.readLine().hasSuffix(#""id": 1}"#))
        #expect(try client.readLine().hasSuffix(#""id": 2}"#))
        client.send("\n \"query-block-exports\", ")
        try await Task.sleep(for: .milliseconds(20))
        client.send(#""id": 3}"#)
        #expect(try client.readLine().hasSuffix(#""id": 3}"#))
        // QEMU's single-quoted strings.
        #expect(try client.command(#"{'execute': 'nope', 'id': 'it\'s "quoted"'}"#)
                == #"{"id": "it's \"quoted\"", "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#)
    }

    @Test func idsAreEchoedExactly() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        #expect(try client.command(#"{"execute": "nope", "id": "\u00e9\u20ac\ud83d\ude00\t\n\"\\/"}"#)
                == #"{"id": "\u00E9\u20AC\uD83D\uDE00\t\n\"\\/", "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#)
        #expect(try client.command(#"{"execute": "nope", "id": [true, false, null, {}, [], 18446744073709551615, -9223372036854775808]}"#)
                == #"{"id": [true, false, null, {}, [], 18446744073709551615, -9223372036854775808], "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#)
    }

    @Test func oversizedMessageIsRejectedAndTheClientGoesOn() async throws {
        let fixture = try await QMPFixture.make(messageLimit: 4096)
        defer { fixture.closeSoon() }
        let client = try QMPLineClient(path: fixture.path)
        try client.negotiate()
        let huge = #"{"execute": "nope", "id": ""# + String(repeating: "x", count: 10000) + "\"}"
        let reply = try client.command(huge)
        #expect(reply == #"{"error": {"class": "GenericError", "desc": "JSON parse error, message longer than 4096 bytes; the rest of its line was ignored"}}"#)
        #expect(try client.command(#"{"execute": "query-version", "id": 2}"#).hasSuffix(#""id": 2}"#))
        // An unbalanced '{' cannot hold memory forever either.
        client.send(String(repeating: "[", count: 5000))
        #expect(try client.readLine().contains("message longer than 4096 bytes"))
        #expect(try client.command("\n" + #"{"execute": "query-version", "id": 3}"#).hasSuffix(#""id": 3}"#))
    }

    @Test func deepNestingIsRefused() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        let deep = #"{"execute": "nope", "id": "# + String(repeating: "[", count: 500) + String(repeating: "]", count: 500) + "}"
        #expect(try client.command(deep).contains("JSON parse error, nested too deeply"))
    }

    @Test func repliesKeepRequestOrderWhileACommandWaits() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        await fixture.setHoldExportAdd()
        client.send(#"{"execute": "block-export-add", "arguments": {"type": "vhost-user-blk", "id": "e1", "node-name": "disk0", "addr": {"type": "unix", "path": "/tmp/e1.sock"}}, "id": 1}"# + "\n")
        client.send(#"{"execute": "query-version", "id": 2}"# + "\n")
        while await fixture.target.heldExportAddCount == 0 { try await Task.sleep(for: .milliseconds(5)) }
        // A second client is not held up by the first one's command.
        let other = try QMPLineClient(path: fixture.path)
        try other.negotiate()
        #expect(try other.command(#"{"execute": "query-block-exports", "id": "other"}"#).hasSuffix(#""id": "other"}"#))
        await fixture.target.releaseExportAdd()
        #expect(try client.readLine() == #"{"return": {}, "id": 1}"#)
        #expect(try client.readLine().hasSuffix(#""id": 2}"#))
    }

    @Test func halfClosedClientStillGetsItsReplies() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        client.send(#"{"execute": "query-version", "id": 1}"# + "\n" + #"{"execute": "block-export-revoke", "arguments": {"id": "exp0"}, "id": 2}"# + "\n")
        client.shutdownWrite()
        #expect(try client.readLine().hasSuffix(#""id": 1}"#))
        #expect(try client.readLine() == #"{"return": {}, "id": 2}"#)
        #expect(client.readsEndOfFile())
    }

    @Test func prettyOutputMatchesQEMU() async throws {
        let fixture = try await QMPFixture.make(pretty: true)
        defer { fixture.closeSoon() }
        let client = try QMPLineClient(path: fixture.path)
        var greeting: [String] = []
        for _ in 0..<13 { greeting.append(try client.readLine()) }
        #expect(greeting.joined(separator: "\n") == """
            {
                "QMP": {
                    "version": {
                        "qemu": {
                            "micro": 0,
                            "minor": 0,
                            "major": 0
                        },
                        "package": "spindle 0.1.0"
                    },
                    "capabilities": [
                    ]
                }
            """)
        #expect(try client.readLine() == "}")
        client.send(#"{"execute": "qmp_capabilities", "id": [1]}"# + "\n")
        var reply: [String] = []
        for _ in 0..<7 { reply.append(try client.readLine()) }
        #expect(reply.joined(separator: "\n") == "{\n    \"return\": {\n    },\n    \"id\": [\n        1\n    ]\n}")
    }
}

extension QMPFixture {
    func setHoldExportAdd() { target.holdExportAdd = true }
}
