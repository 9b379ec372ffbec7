@testable import Monitor
import SpindleOptions
import Testing

@Suite struct JSONSerializerTests {
    let compact = JSONSerializer()

    @Test func scalarsAndEscapes() {
        #expect(compact.serialize(.null) == "null")
        #expect(compact.serialize(.bool(true)) == "true")
        #expect(compact.serialize(.integer(UInt64.max)) == "18446744073709551615")
        #expect(compact.serialize(.integer(Int64.min)) == "-9223372036854775808")
        #expect(compact.serialize(.string("a\"b\\c\n\r\t\u{08}\u{0C}\u{01}\u{7F}é😀/")) == #""a\"b\\c\n\r\t\b\f\u0001\u007F\u00E9\uD83D\uDE00/""#)
    }

    @Test func containersKeepInsertionOrder() {
        let value = JSONValue.object(["z": .integer(1), "a": .array([.emptyObject, .array([]), .string("x")])])
        #expect(compact.serialize(value) == #"{"z": 1, "a": [{}, [], "x"]}"#)
        #expect(compact.message(value).suffix(2) == [0x0D, 0x0A])
    }

    @Test func roundTripsThroughTheParser() throws {
        let text = #"{"s": "\u00E9\uD83D\uDE00\"", "n": [-1, 2.5e10, 0], "o": {"t": true, "f": false, "z": null}}"#
        let value = try JSONText.parse(Array(text.utf8))
        #expect(compact.serialize(value) == text)
    }
}

@Suite struct QMPMessageFramerTests {
    func frames(_ chunks: [String], limit: Int = 1 << 20) -> [QMPMessageFramer.Frame] {
        var framer = QMPMessageFramer(limit: limit)
        return chunks.flatMap { framer.feed(Array($0.utf8)) }
    }

    func message(_ text: String) -> QMPMessageFramer.Frame { .message(Array(text.utf8)) }

    @Test func splitsOnOutermostBrackets() {
        #expect(frames([#"{"a": {"b": [1, "}"]}}{"c": 2}  [3]"#]) == [message(#"{"a": {"b": [1, "}"]}}"#), message(#"{"c": 2}"#), message("[3]")])
        #expect(frames([#"{"a"#, #"": "x\"}"}"#]) == [message(#"{"a": "x\"}"}"#)])
        #expect(frames(["{\n\"a\":\n1\n}\n"]) == [message("{\n\"a\":\n1\n}")])
        #expect(frames([#"{'a': '}"'}"#]) == [message(#"{'a': '}"'}"#)])
    }

    @Test func strayAndBareTokensEndAtOnce() {
        #expect(frames(["}\n"]) == [message("}")])
        #expect(frames(["5 true{}"]) == [message("5"), message("true"), message("{}")])
        #expect(frames(["\"str\""]) == [message("\"str\"")])
    }

    @Test func controlCharacterEndsAnUnterminatedString() {
        #expect(frames(["{\"exec\n{}"]) == [message("{\"exec\n"), message("{}")])
    }

    @Test func tooLongMessagesAreDroppedToTheEndOfTheLine() {
        let long = "{\"a\": \"" + String(repeating: "x", count: 100) + "\"}"
        #expect(frames([long + " more garbage\n{}"], limit: 50) == [.tooLong, message("{}")])
        #expect(frames([String(repeating: "[", count: 60), "]]]\n[1]"], limit: 50) == [.tooLong, message("[1]")])
    }
}
