import Testing
@testable import Qcow2Format

/// The header rewrite a commit makes: a new backing file name and format, every other field
/// and extension (unknown ones included) kept, and what does not fit refused.
struct Qcow2BackingRewriteTests {
    private static let unknown = Qcow2HeaderExtension(type: 0x1234_5678, data: [1, 2, 3, 4, 5, 6, 7, 8, 9])

    private func chainImage() -> Qcow2TestImage {
        var image = Qcow2TestImage()
        image.compatible = Qcow2Features.lazyRefcounts
        image.autoclear = 1
        image.extensions = [(Qcow2HeaderExtension.backingFormat, Array("qcow2".utf8)), (Self.unknown.type, Self.unknown.data)]
        image.backingFile = Array("/images/mid.qcow2".utf8)
        return image
    }

    @Test func namesTheNewBackingFileAndKeepsEverythingElse() throws {
        let image = chainImage()
        let old = try image.header()
        let rewritten = try Qcow2BackingRewrite.rewrite(image.bytes(), backingFile: "/images/base.img", backingFormat: "raw")
        #expect(rewritten.count == image.clusterSize)  // the header cluster, no further
        #expect(Array(rewritten[0..<8]) == Array(image.bytes()[0..<8]))
        #expect(Array(rewritten[20..<112]) == Array(image.bytes()[20..<112]))
        let new = try Qcow2Header.parse(rewritten)
        #expect(new.backingFileName == "/images/base.img")
        #expect(new.backingFormat == "raw")
        #expect(new.extensions.filter { $0.type != Qcow2HeaderExtension.backingFormat } == [Self.unknown])
        var expected = old
        expected.backingFileName = new.backingFileName
        expected.backingFileOffset = new.backingFileOffset
        expected.backingFileSize = new.backingFileSize
        expected.extensions = new.extensions
        #expect(new == expected)
    }

    @Test func aShorterNameLeavesNoTraceOfTheOldOne() throws {
        let image = chainImage()
        let rewritten = try Qcow2BackingRewrite.rewrite(image.bytes(), backingFile: "b", backingFormat: "qcow2")
        let new = try Qcow2Header.parse(rewritten)
        #expect(new.backingFileName == "b" && new.backingFileSize == 1)
        let end = Int(new.backingFileOffset) + 1
        #expect(rewritten[end..<rewritten.count].allSatisfy { $0 == 0 })
    }

    @Test func dropsTheBackingLink() throws {
        let rewritten = try Qcow2BackingRewrite.rewrite(chainImage().bytes(), backingFile: nil, backingFormat: nil)
        let new = try Qcow2Header.parse(rewritten)
        #expect(new.backingFileName == nil && new.backingFileOffset == 0 && new.backingFormat == nil)
        #expect(new.extensions == [Self.unknown])
    }

    @Test func refusesANameThatDoesNotFitInTheFirstCluster() {
        let name = String(repeating: "n", count: 500)  // 512-byte clusters: header 112 + extensions
        #expect(throws: Qcow2FormatError.self) {
            try Qcow2BackingRewrite.rewrite(chainImage().bytes(), backingFile: name, backingFormat: "qcow2")
        }
        #expect(throws: Qcow2FormatError.self) {
            try Qcow2BackingRewrite.rewrite(chainImage().bytes(), backingFile: nil, backingFormat: "qcow2")
        }
    }

    @Test func rewritesAVersion2Header() throws {
        var image = chainImage()
        image.version = 2
        image.extensions = []
        let rewritten = try Qcow2BackingRewrite.rewrite(image.bytes(), backingFile: "base.qcow2", backingFormat: "qcow2")
        let new = try Qcow2Header.parse(rewritten)
        #expect(new.version == 2 && new.backingFileName == "base.qcow2" && new.backingFormat == "qcow2")
    }
}
