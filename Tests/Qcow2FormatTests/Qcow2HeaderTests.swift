import Testing
@testable import Qcow2Format

/// The header parser and layout checks against hostile images built byte by byte.
struct Qcow2HeaderTests {
    @Test func parsesEveryFieldOfAVersion3Header() throws {
        var image = Qcow2TestImage()
        image.compatible = Qcow2Features.lazyRefcounts
        image.autoclear = 1
        image.refcountOrder = 6
        let header = try image.header()
        #expect(header.version == 3)
        #expect(header.clusterSize == 512)
        #expect(header.size == 32 << 10)
        #expect(header.l1Size == 1 && header.l1TableOffset == 1024)
        #expect(header.refcountTableOffset == 512 && header.refcountTableClusters == 1)
        #expect(header.refcountBits == 64)
        #expect(header.headerLength == 112)
        #expect(header.features.hasLazyRefcounts)
        #expect(header.autoclearFeatures == 1)
        #expect(try image.layout().l2TablesNeeded == 1)
    }

    @Test func parsesAVersion2HeaderWithItsFixedRefcountWidth() throws {
        var image = Qcow2TestImage()
        image.version = 2
        image.refcountOrder = 0  // not written in v2
        let header = try image.header()
        #expect(header.version == 2 && header.headerLength == 72 && header.refcountBits == 16)
        #expect(header.incompatibleFeatures == 0)
    }

    @Test func keepsExtensionsByteExactIncludingUnknownOnes() throws {
        var image = Qcow2TestImage()
        image.extensions = [(Qcow2HeaderExtension.backingFormat, Array("qcow2".utf8)),
                            (0x1234_5678, [1, 2, 3, 4, 5, 6, 7, 8, 9])]
        image.backingFile = Array("base.qcow2".utf8)
        let header = try image.header()
        #expect(header.extensions == [Qcow2HeaderExtension(type: Qcow2HeaderExtension.backingFormat, data: Array("qcow2".utf8)),
                                      Qcow2HeaderExtension(type: 0x1234_5678, data: [1, 2, 3, 4, 5, 6, 7, 8, 9])])
        #expect(header.backingFormat == "qcow2")
        #expect(header.backingFileName == "base.qcow2")
    }

    @Test func refusesWhatIsNotQcow2OrTooNew() {
        #expect(throws: Qcow2FormatError.self) { try Qcow2Header.parse([UInt8](repeating: 0, count: 512)) }
        var image = Qcow2TestImage()
        image.version = 4
        #expect(errorText { try image.header() }.contains("version 4"))
    }

    @Test(arguments: [0, 8, 22, 63] as [UInt32])
    func refusesAbsurdClusterBits(_ bits: UInt32) {
        var image = Qcow2TestImage()
        image.clusterBits = bits
        #expect(errorText { try image.header() }.contains("cluster_bits \(bits)"))
    }

    @Test func refusesBadHeaderLengthsAndRefcountOrders() {
        var image = Qcow2TestImage()
        image.headerLength = 100
        #expect(errorText { try image.header() }.contains("header_length"))
        image.headerLength = 1024
        #expect(errorText { try image.header() }.contains("header_length"))
        image = Qcow2TestImage()
        image.refcountOrder = 7
        #expect(errorText { try image.header() }.contains("refcount_order 7"))
    }

    @Test func refusesABackingFileNameLongerThanAllowedOrOutsideTheHeader() {
        var image = Qcow2TestImage()
        image.backingFile = Array("b".utf8)
        image.backingFileSize = 1024
        #expect(errorText { try image.header() }.contains("1024 bytes long"))
        image.backingFileSize = 600  // fits the limit, not the 512-byte header cluster
        #expect(errorText { try image.header() }.contains("not inside the header cluster"))
    }

    @Test func refusesAnExtensionRunningPastTheHeaderCluster() {
        var image = Qcow2TestImage()
        image.extensions = [(0x1234_5678, [UInt8](repeating: 7, count: 16))]
        var bytes = image.bytes()
        bytes[112 + 4] = 0x10  // length 0x10000010
        #expect(throws: Qcow2FormatError.self) { try Qcow2Header.parse(bytes) }
    }

    @Test func refusesTablesPastTheEndOfTheFile() {
        var image = Qcow2TestImage()
        image.l1Offset = 1 << 40
        #expect(errorText { try image.layout() }.contains("L1 table"))
        image = Qcow2TestImage()
        image.refcountTableOffset = UInt64.max - 511
        #expect(errorText { try image.layout() }.contains("refcount table"))
        image = Qcow2TestImage()
        image.snapshotCount = 1
        image.snapshotsOffset = 1 << 30
        #expect(errorText { try image.layout() }.contains("snapshot table"))
    }

    @Test func refusesTablesOverlappingTheHeaderOrEachOther() {
        var image = Qcow2TestImage()
        image.l1Offset = 0
        #expect(errorText { try image.layout() }.contains("overlaps the header"))
        image = Qcow2TestImage()
        image.refcountTableOffset = 0
        #expect(errorText { try image.layout() }.contains("overlaps the header"))
        image = Qcow2TestImage()
        image.l1Offset = 512
        #expect(errorText { try image.layout() }.contains("overlaps the refcount table"))
        image = Qcow2TestImage()
        image.l1Offset = 1000
        #expect(errorText { try image.layout() }.contains("not aligned"))
    }

    @Test func refusesAbsurdSizesBeforeAllocatingAnything() {
        var image = Qcow2TestImage()
        image.l1Size = .max
        #expect(errorText { try image.layout() }.contains("larger than 32 MiB"))
        image = Qcow2TestImage()
        image.size = 1 << 62
        #expect(errorText { try image.layout() }.contains("absurd"))
        image = Qcow2TestImage()
        image.size = 1 << 40  // needs far more than one L1 entry
        #expect(errorText { try image.layout() }.contains("needs"))
        image = Qcow2TestImage()
        image.refcountTableClusters = .max
        #expect(errorText { try image.layout() }.contains("larger than 8 MiB"))
        image = Qcow2TestImage()
        image.refcountTableClusters = 0
        #expect(errorText { try image.layout() }.contains("no refcount table"))
        image = Qcow2TestImage()
        image.snapshotCount = 70000
        #expect(errorText { try image.layout() }.contains("snapshots"))
    }
}

/// The error's text, or "" if `body` did not throw.
func errorText<T>(_ body: () throws -> T) -> String {
    do {
        _ = try body()
        return ""
    } catch let error as Qcow2FormatError {
        return error.message
    } catch {
        return "unexpected \(error)"
    }
}
