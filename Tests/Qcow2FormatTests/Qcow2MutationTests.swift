import Testing
@testable import Qcow2Format

/// A poor man's fuzzing run inside the unit tests (the libFuzzer targets need a sanitizer
/// build): valid headers with random bytes overwritten go through the parser, the feature
/// check and the layout checks. None may trap; whatever is accepted must be consistent.
struct Qcow2MutationTests {
    /// xorshift64*: deterministic, so a failure reproduces.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 0x2545_F491_4F6C_DD1D
        }
    }

    @Test func mutatedHeadersNeverTrapAndAcceptedOnesAreConsistent() {
        var image = Qcow2TestImage()
        image.extensions = [(Qcow2HeaderExtension.backingFormat, Array("qcow2".utf8)),
                            (Qcow2HeaderExtension.featureNameTable, Qcow2TestImage.featureName(type: 0, bit: 0, "dirty"))]
        image.backingFile = Array("base.qcow2".utf8)
        let original = image.bytes()
        var random = Random(state: 0x9E37_79B9_7F4A_7C15)
        var accepted = 0
        for _ in 0..<20_000 {
            var bytes = original
            for _ in 0..<(1 + Int(random.next() % 4)) {
                let at = Int(random.next() % UInt64(min(bytes.count, 256)))
                bytes[at] = random.next() % 3 == 0 ? 0xff : UInt8(truncatingIfNeeded: random.next())
            }
            if random.next() % 8 == 0 { bytes = Array(bytes.prefix(Int(random.next() % UInt64(bytes.count)))) }
            guard let header = try? Qcow2Header.parse(bytes) else { continue }
            _ = try? header.features.check(header: header, readOnly: random.next() % 2 == 0)
            guard let layout = try? Qcow2Layout.validate(header, fileLength: UInt64(bytes.count)) else { continue }
            accepted += 1
            #expect(layout.l1Offset % layout.clusterSize == 0 || layout.l1Size == 0)
            #expect(layout.refcountTableOffset >= layout.clusterSize)
            #expect(layout.refcountTableOffset + layout.refcountTableBytes <= UInt64(bytes.count))
        }
        #expect(accepted > 0)
    }

    @Test func randomL2EntriesDecodeWithinTheirRules() {
        var random = Random(state: 42)
        for _ in 0..<100_000 {
            let clusterBits = 9 + UInt32(random.next() % 13)
            let cluster: UInt64 = 1 << UInt64(clusterBits)
            switch Qcow2Entries.decodeL2(random.next(), clusterBits: clusterBits) {
            case .data(let host, _): #expect(host % cluster == 0 && host >= cluster)
            case .compressed(let host, let count): #expect(host >= cluster && count >= 1 && count <= 2 * cluster)
            case .unallocated, .zero, .corrupt: break
            }
        }
    }
}
