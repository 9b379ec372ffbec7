@testable import SpindleOptions
import Testing

@Suite struct KeyValueParserTests {
    let parser = KeyValueParser(option: "--test", impliedKey: "driver")

    func parse(_ text: String) throws -> OptionObject { try parser.parse(text).object }

    @Test func pairsInOrder() throws {
        let object = try parse("driver=file,node-name=disk0,filename=disk.img")
        #expect(object.entries.map(\.key) == ["driver", "node-name", "filename"])
        #expect(object["filename"] == .string("disk.img"))
    }

    @Test func impliedKeyOnlyForFirstWord() throws {
        let object = try parse("null-co,node-name=n0")
        #expect(object["driver"] == .string("null-co"))
        #expect(throws: CommandLineError.self) { try parse("node-name=n0,null-co") }
        #expect(throws: CommandLineError.self) { try KeyValueParser(option: "--x").parse("word") }
    }

    @Test func doubledCommaIsALiteralComma() throws {
        let object = try parse("filename=a,,b,,,,c,node-name=n0")
        #expect(object["filename"] == .string("a,b,,c"))
        #expect(object["node-name"] == .string("n0"))
        #expect(try parse("filename=ends,,")["filename"] == .string("ends,"))
    }

    @Test func impliedValueEndsAtFirstComma() {
        // As in QEMU, ",," is not an escape in the implied value: ",x" then has an empty key.
        #expect(throws: CommandLineError.self) { try parse("null-co,,x,node-name=n0") }
    }

    @Test func dottedKeysNest() throws {
        let object = try parse("cache.direct=on,cache.no-flush=off")
        guard case .object(let cache) = object["cache"] else { Issue.record("cache is not an object"); return }
        #expect(cache["direct"] == .string("on"))
        #expect(object.leafPaths == ["cache.direct", "cache.no-flush"])
    }

    @Test func lastValueWins() throws {
        #expect(try parse("node-name=a,node-name=b")["node-name"] == .string("b"))
    }

    @Test func emptyValuesTrailingCommaAndEmptyText() throws {
        #expect(try parse("node-name=")["node-name"] == .string(""))
        #expect(try parse("node-name=n0,")["node-name"] == .string("n0"))
        #expect(try parse("").entries.isEmpty)
        #expect(try parse("filename=a=b")["filename"] == .string("a=b"))
    }

    @Test func inconsistentNesting() {
        #expect(throws: CommandLineError.self) { try parse("cache=on,cache.direct=on") }
        #expect(throws: CommandLineError.self) { try parse("cache.direct=on,cache=on") }
    }

    @Test(arguments: [",node-name=n0", "a..b=1", "a b=1", ".a=1", "a.=1", "=1", "x=1,read-zeroes"])
    func invalidKeys(_ text: String) {
        #expect(throws: CommandLineError.self) { try parse(text) }
    }

    @Test func shortBooleans() throws {
        let result = try KeyValueParser(option: "--chardev", impliedKey: "backend", shortBooleans: true)
            .parse("socket,id=c0,server,nowait")
        #expect(result.object["server"] == .string("on"))
        #expect(result.object["wait"] == .string("off"))
        #expect(result.shortBooleansUsed == ["server", "wait"])
    }

    @Test func utf8Values() throws {
        #expect(try parse("filename=dïsk,,ü.img")["filename"] == .string("dïsk,ü.img"))
    }
}
