import BlockCommon
@testable import SpindleOptions
import Testing

/// The public JSON entry points the QMP monitor uses.
@Suite struct JSONEntryPointTests {
    @Test func singleQuotesOnlyWhenAsked() throws {
        let text = Array(#"{'a': 'it\'s "x"', "b": 1}"#.utf8)
        #expect(throws: JSONSyntaxError.self) { try JSONText.parse(text) }
        let value = try JSONText.parse(text, singleQuotedStrings: true)
        #expect(value == .object(OptionObject(["a": .string(#"it's "x""#), "b": .number("1")])))
        #expect(throws: JSONSyntaxError.self) { try JSONText.parse(Array(#"{"a": 'x"}"#.utf8), singleQuotedStrings: true) }
    }

    @Test func syntaxErrorsSayWhere() {
        #expect(throws: JSONSyntaxError(offset: 6, reason: "unexpected character")) { try JSONText.parse(Array(#"{"a": x}"#.utf8)) }
    }

    @Test func manyKeysParseInLinearTime() throws {
        var text = "{"
        for index in 0..<100_000 { text += (index > 0 ? "," : "") + "\"k\(index)\":\(index)" }
        text += "}"
        let clock = ContinuousClock()
        let elapsed = try clock.measure {
            guard case .object(let object) = try JSONText.parse(Array(text.utf8)) else { Issue.record("not an object"); return }
            #expect(object.count == 100_000)
            #expect(object["k99999"] == .number("99999"))
        }
        #expect(elapsed < .seconds(10))
        #expect(throws: JSONSyntaxError.self) { try JSONText.parse(Array(#"{"a": 1, "b": 2, "a": 3}"#.utf8)) }
    }

    @Test func removingKeysKeepsLookupsRight() {
        var object = OptionObject(["a": .number("1"), "b": .number("2"), "c": .number("3")])
        object["a"] = nil
        #expect(object["c"] == .number("3"))
        object["c"] = .null
        #expect(object.entries.map(\.key) == ["b", "c"])
        #expect(object == OptionObject(["b": .number("2"), "c": .null]))
    }

    @Test func blockdevAndExportFromJSONObjects() throws {
        let node = try blockdevOptions(fromJSONObject: OptionObject([
            "driver": .string("null-co"), "node-name": .string("n0"), "size": .number("4096"),
        ]))
        var null = NullOptions()
        null.size = 4096
        #expect(node == BlockdevOptions(nodeName: NodeName("n0"), driver: .null(null)))
        #expect(throws: CommandLineError(option: "", "'size' must be a size in bytes, not a string")) {
            try blockdevOptions(fromJSONObject: OptionObject(["driver": .string("null-co"), "node-name": .string("n0"), "size": .string("4k")]))
        }
        let export = try exportOptions(fromJSONObject: OptionObject([
            "type": .string("vhost-user-blk"), "id": .string("e0"), "node-name": .string("n0"),
            "addr": .object(OptionObject(["type": .string("unix"), "path": .string("/tmp/e0.sock")])),
        ]))
        #expect(export == VhostUserBlkExportOptions(id: "e0", nodeName: NodeName("n0"), socketPath: "/tmp/e0.sock"))
        #expect(throws: CommandLineError.self) {
            try exportOptions(fromJSONObject: OptionObject(["type": .string("vhost-user-blk"), "id": .string("e0")]))
        }
    }
}
