import Testing
@testable import Qcow2Format

/// The header rewrite block-stream uses to drop backing layers: only the backing reference
/// changes; every other field and extension (unknown ones included) survives, in order.
struct Qcow2BackingRewriteTests {
    private func image(backing: String?, extraExtension: Bool = true) -> Qcow2TestImage {
        var image = Qcow2TestImage()
        image.compatible = Qcow2Features.lazyRefcounts
        image.autoclear = 1
        image.extensions = backing == nil ? [] : [(Qcow2HeaderExtension.backingFormat, Array("qcow2".utf8))]
        if extraExtension { image.extensions.append((0x1234_5678, [1, 2, 3, 4, 5, 6, 7, 8, 9])) }
        image.backingFile = backing.map { Array($0.utf8) }
        return image
    }

    /// The rewritten bytes over the old header cluster, parsed again.
    private func rewritten(_ image: Qcow2TestImage, backingFile: String?, format: String?) throws -> (Qcow2Header, [UInt8]) {
        var cluster = image.bytes()
        let new = try Qcow2BackingRewrite.headerBytes(try image.header(), backingFile: backingFile, backingFormat: format)
        cluster.replaceSubrange(0..<new.count, with: new)
        return (try Qcow2Header.parse(cluster), new)
    }

    @Test func namesANewBaseAndKeepsEverythingElse() throws {
        let old = image(backing: "/images/mid.qcow2")
        let (header, _) = try rewritten(old, backingFile: "/images/base.raw", format: "raw")
        let before = try old.header()
        #expect(header.backingFileName == "/images/base.raw")
        #expect(header.backingFormat == "raw")
        #expect(header.extensions.map(\.type) == [Qcow2HeaderExtension.backingFormat, 0x1234_5678])
        #expect(header.extensions[1].data == [1, 2, 3, 4, 5, 6, 7, 8, 9])
        #expect(header.l1TableOffset == before.l1TableOffset && header.refcountTableOffset == before.refcountTableOffset)
        #expect(header.compatibleFeatures == before.compatibleFeatures && header.autoclearFeatures == before.autoclearFeatures)
        #expect(header.headerLength == before.headerLength && header.size == before.size)
    }

    @Test func droppingTheBackingRemovesNameAndFormatAndClearsTheOldBytes() throws {
        let old = image(backing: "a-rather-long-backing-file-name.qcow2")
        let (header, bytes) = try rewritten(old, backingFile: nil, format: nil)
        #expect(header.backingFileName == nil && header.backingFileOffset == 0 && header.backingFileSize == 0)
        #expect(header.backingFormat == nil)
        #expect(header.extensions.map(\.type) == [0x1234_5678])
        // Nothing of the old name is left in the header area the old header used.
        #expect(bytes.count >= Qcow2BackingRewrite.usedBytes(try old.header()))
        #expect(!String(decoding: bytes, as: UTF8.self).contains("backing-file-name"))
    }

    @Test func worksOnVersion2Headers() throws {
        var old = image(backing: "mid.qcow2", extraExtension: false)
        old.version = 2
        old.headerLength = 72
        let (header, _) = try rewritten(old, backingFile: "base.qcow2", format: "qcow2")
        #expect(header.version == 2 && header.backingFileName == "base.qcow2" && header.backingFormat == "qcow2")
    }

    @Test func refusesNamesThatDoNotFitOrAreEmpty() throws {
        let old = image(backing: "mid.qcow2")
        let tooLong = String(repeating: "x", count: 400)  // 512-byte clusters: no room
        #expect(throws: Qcow2FormatError.self) {
            try Qcow2BackingRewrite.headerBytes(try old.header(), backingFile: tooLong, backingFormat: "qcow2")
        }
        #expect(throws: Qcow2FormatError.self) {
            try Qcow2BackingRewrite.headerBytes(try old.header(), backingFile: "", backingFormat: "qcow2")
        }
    }
}
