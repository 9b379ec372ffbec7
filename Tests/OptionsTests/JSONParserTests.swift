@testable import SpindleOptions
import Testing

@Suite struct JSONParserTests {
    func parse(_ text: String) throws(CommandLineError) -> OptionObject {
        var parser = JSONParser(option: "--test")
        return try parser.parseObject(text)
    }

    @Test func typedValues() throws {
        let object = try parse(#" { "s": "x", "t": true, "f": false, "n": -12.5e3, "z": null, "a": [1, "2"], "o": {"k": 0} } "#)
        #expect(object["s"] == .string("x"))
        #expect(object["t"] == .bool(true))
        #expect(object["f"] == .bool(false))
        #expect(object["n"] == .number("-12.5e3"))
        #expect(object["z"] == .null)
        #expect(object["a"] == .array([.number("1"), .string("2")]))
        #expect(object.leafPaths == ["s", "t", "f", "n", "z", "a", "o.k"])
    }

    @Test func stringEscapes() throws {
        let object = try parse(#"{"s": "a\"b\\c\/d\n\t\u00e9\ud83d\ude00"}"#)
        #expect(object["s"] == .string("a\"b\\c/d\n\té😀"))
    }

    @Test func notAnObject() {
        for text in ["[1]", "\"x\"", "1", "true", "null"] {
            #expect(throws: CommandLineError.self) { try parse(text) }
        }
        do {
            _ = try parse("[1]")
        } catch {
            #expect(error.description.contains("must be an object"))
        }
    }

    @Test(arguments: [
        "", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":1,}", "{a:1}", "{\"a\":1} x", "{\"a\":1}{}",
        "{\"a\":01}", "{\"a\":1.}", "{\"a\":-}", "{\"a\":1e}", "{\"a\":tru}", "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\u{01}\"}",
        "{\"a\":1,\"a\":2}", "{\"a\":[1,]}", "{\"a\":\"unterminated}",
    ])
    func malformed(_ text: String) {
        #expect(throws: CommandLineError.self) { try parse(text) }
    }

    @Test func deepNestingIsRejectedNotACrash() {
        let deep = String(repeating: "{\"a\":", count: 10_000) + "1" + String(repeating: "}", count: 10_000)
        #expect(throws: CommandLineError.self) { try parse(deep) }
        let deepArray = "{\"a\":" + String(repeating: "[", count: 100_000)
        #expect(throws: CommandLineError.self) { try parse(deepArray) }
    }
}
